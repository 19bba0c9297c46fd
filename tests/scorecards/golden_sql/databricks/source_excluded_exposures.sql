SELECT count(*) AS excluded 
FROM (SELECT ranked.unit_id AS id, 42 AS experiment_id, ranked.unit_id AS unit_id, ranked.variant AS variant, CASE WHEN (ranked.exposed_at >= '2026-03-08 09:30:00.250000+00:00') THEN 3 WHEN (ranked.exposed_at >= '2026-03-03 09:30:00.250000+00:00') THEN 2 WHEN (ranked.exposed_at >= '2026-02-20 09:30:00.250000+00:00') THEN 1 ELSE 1 END AS allocation_version, ranked.exposed_at AS exposed_at, ranked.attributes AS attributes 
FROM (SELECT analytics.exp_log.uid AS unit_id, analytics.exp_log.arm AS variant, analytics.exp_log.ts AS exposed_at, coalesce(try_parse_json(CAST(analytics.exp_log.attrs AS STRING)), try_parse_json(CAST('{}' AS STRING))) AS attributes, row_number() OVER (PARTITION BY analytics.exp_log.uid ORDER BY analytics.exp_log.ts, analytics.exp_log.arm) AS row_rank 
FROM analytics.exp_log 
WHERE analytics.exp_log.exp = 'checkout-redesign' AND analytics.exp_log.uid IS NOT NULL AND analytics.exp_log.ts IS NOT NULL) AS ranked 
WHERE ranked.row_rank = 1) AS exposures 
WHERE exposures.experiment_id = 42 AND (NOT (exposures.exposed_at >= '2026-03-01 03:30:00.250000+00:00' AND (exposures.attributes IS NOT NULL)) OR exposures.exposed_at > '2026-03-12 09:30:00.250000+00:00')
