SELECT count(*) AS excluded 
FROM exposures 
WHERE exposures.experiment_id = 42 AND (NOT (exposures.exposed_at >= '2026-03-01 03:30:00.250000+00:00' AND (exposures.attributes IS NOT NULL)) OR exposures.exposed_at > '2026-03-12 09:30:00.250000+00:00')
