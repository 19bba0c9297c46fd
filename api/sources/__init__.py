"""Analysis sources: users' own databases whose exposure and event tables titrate analyses in place."""
