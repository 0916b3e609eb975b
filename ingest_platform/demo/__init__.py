"""Sample data for trying the platform: demo dumps and a demo application that writes a change log.

Not part of the core: nothing in the core packages imports it."""
