-- description: Hires of 2021 per department and job, one column per quarter (Q1..Q4).
-- owner: team:analytics
-- grain: department, job
-- freshness_hours: 24
SELECT d.department,
       j.job,
       count(*) FILTER (WHERE extract(quarter FROM h.datetime) = 1) AS q1,
       count(*) FILTER (WHERE extract(quarter FROM h.datetime) = 2) AS q2,
       count(*) FILTER (WHERE extract(quarter FROM h.datetime) = 3) AS q3,
       count(*) FILTER (WHERE extract(quarter FROM h.datetime) = 4) AS q4
FROM hr.hired_employees AS h
JOIN hr.departments AS d ON d.id = h.department_id
JOIN hr.jobs AS j ON j.id = h.job_id
WHERE h.datetime >= '2021-01-01' AND h.datetime < '2022-01-01'
GROUP BY d.department, j.job
ORDER BY d.department, j.job
