SELECT exposures.allocation_version, AS_VARCHAR(GET(exposures.attributes, CAST('country' AS VARCHAR))) AS segment, exposures.variant, count(*) AS units 
FROM exposures 
WHERE exposures.experiment_id = 42 AND exposures.exposed_at >= '2026-03-01 03:30:00.250000+00:00' AND (exposures.attributes IS NOT NULL) AND exposures.exposed_at <= '2026-03-12 09:30:00.250000+00:00' GROUP BY exposures.allocation_version, AS_VARCHAR(GET(exposures.attributes, CAST('country' AS VARCHAR))), exposures.variant ORDER BY exposures.allocation_version, segment, exposures.variant
