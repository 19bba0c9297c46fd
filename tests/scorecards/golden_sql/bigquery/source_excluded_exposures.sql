SELECT count(*) AS `excluded` 
FROM (SELECT `ranked`.`unit_id` AS `id`, 42 AS `experiment_id`, `ranked`.`unit_id` AS `unit_id`, `ranked`.`variant` AS `variant`, CASE WHEN (`ranked`.`exposed_at` >= TIMESTAMP '2026-03-08 09:30:00.250000+00') THEN 3 WHEN (`ranked`.`exposed_at` >= TIMESTAMP '2026-03-03 09:30:00.250000+00') THEN 2 WHEN (`ranked`.`exposed_at` >= TIMESTAMP '2026-02-20 09:30:00.250000+00') THEN 1 ELSE 1 END AS `allocation_version`, `ranked`.`exposed_at` AS `exposed_at`, `ranked`.`attributes` AS `attributes` 
FROM (SELECT `exp_log`.`uid` AS `unit_id`, `exp_log`.`arm` AS `variant`, `exp_log`.`ts` AS `exposed_at`, coalesce(SAFE.PARSE_JSON(`exp_log`.`attrs`), SAFE.PARSE_JSON('{}')) AS `attributes`, row_number() OVER (PARTITION BY `exp_log`.`uid` ORDER BY `exp_log`.`ts`, `exp_log`.`arm`) AS `row_rank` 
FROM `analytics`.`exp_log` 
WHERE `exp_log`.`exp` = 'checkout-redesign' AND `exp_log`.`uid` IS NOT NULL AND `exp_log`.`ts` IS NOT NULL) AS `ranked` 
WHERE `ranked`.`row_rank` = 1) AS `exposures` 
WHERE `exposures`.`experiment_id` = 42 AND (NOT (`exposures`.`exposed_at` >= TIMESTAMP '2026-03-01 03:30:00.250000+00' AND (`exposures`.`attributes` IS NOT NULL)) OR `exposures`.`exposed_at` > TIMESTAMP '2026-03-12 09:30:00.250000+00')
