-- description: Departments that hired more people in 2021 than the mean over all departments.
-- owner: team:analytics
-- grain: id
-- freshness_hours: 24
WITH hires AS (
    SELECT department_id, count(*) AS hired
    FROM hr.hired_employees
    WHERE datetime >= '2021-01-01' AND datetime < '2022-01-01'
    GROUP BY department_id
)
SELECT d.id, d.department, h.hired
FROM hires AS h
JOIN hr.departments AS d ON d.id = h.department_id
WHERE h.hired > (SELECT avg(hired) FROM hires)
ORDER BY h.hired DESC
