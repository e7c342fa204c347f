-- pgTAP: the synthetic generator has the structure MTMS exists for: oracle
-- AUCs in a plausible range per scene, very unequal traffic, CTR and CVR in
-- their documented ranges, user interest shared across scenes, conversion
-- propensity different from click propensity.
BEGIN;
SELECT plan(23);

SELECT has_function('mtms_synthetic_samples', ARRAY['bigint', 'integer', 'jsonb']);
SELECT is((SELECT provolatile FROM pg_proc WHERE proname = 'mtms_synthetic_samples'), 's',
          'mtms_synthetic_samples is STABLE');
SELECT is((SELECT proparallel FROM pg_proc WHERE proname = 'mtms_synthetic_samples'), 's',
          'mtms_synthetic_samples is parallel safe');

CREATE TEMP TABLE syn_tap AS SELECT * FROM mtms_synthetic_samples(300000, 11);
CREATE TEMP TABLE syn_scene AS
SELECT scene, count(*) / 300000.0 AS share, avg(click::int) AS ctr,
       avg(conversion::int) FILTER (WHERE click) AS cvr,
       mtms_auc(p_ctr, click) AS auc_ctr,
       mtms_auc(p_cvr, conversion) FILTER (WHERE click) AS auc_cvr
  FROM syn_tap GROUP BY scene;

SELECT set_eq('SELECT scene FROM syn_scene', ARRAY['search', 'feeds', 'video'], 'three default scenes');
SELECT ok((SELECT share BETWEEN 0.58 AND 0.62 FROM syn_scene WHERE scene = 'search'), 'search has ~60% of the traffic');
SELECT ok((SELECT share BETWEEN 0.34 AND 0.38 FROM syn_scene WHERE scene = 'feeds'), 'feeds has ~36% of the traffic');
SELECT ok((SELECT share BETWEEN 0.03 AND 0.05 FROM syn_scene WHERE scene = 'video'), 'video has ~4% of the traffic');
SELECT is((SELECT count(*) FROM syn_scene WHERE ctr BETWEEN 0.02 AND 0.06), 3::bigint, 'CTR is 2-6% in every scene');
SELECT is((SELECT count(*) FROM syn_scene WHERE cvr BETWEEN 0.05 AND 0.20), 3::bigint, 'CVR among clicks is 5-20% in every scene');
SELECT ok((SELECT avg(click::int) BETWEEN 0.035 AND 0.045 FROM syn_tap), 'overall CTR near the 4% target');

-- The oracle AUC (true probability as the score) is the ceiling any model
-- can reach: high enough to learn from, far from trivial.
SELECT ok((SELECT auc_ctr BETWEEN 0.74 AND 0.84 FROM syn_scene WHERE scene = 'search'), 'oracle CTR AUC of search in 0.74-0.84');
SELECT ok((SELECT auc_ctr BETWEEN 0.74 AND 0.84 FROM syn_scene WHERE scene = 'feeds'), 'oracle CTR AUC of feeds in 0.74-0.84');
SELECT ok((SELECT auc_ctr BETWEEN 0.72 AND 0.86 FROM syn_scene WHERE scene = 'video'), 'oracle CTR AUC of video in 0.72-0.86');
SELECT ok((SELECT auc_cvr BETWEEN 0.70 AND 0.85 FROM syn_scene WHERE scene = 'search'), 'oracle CVR AUC (clicked rows) of search in 0.70-0.85');
SELECT ok((SELECT auc_cvr BETWEEN 0.70 AND 0.85 FROM syn_scene WHERE scene = 'feeds'), 'oracle CVR AUC (clicked rows) of feeds in 0.70-0.85');
SELECT ok((SELECT auc_cvr BETWEEN 0.65 AND 0.90 FROM syn_scene WHERE scene = 'video'), 'oracle CVR AUC (clicked rows) of video in 0.65-0.90');
-- Labels follow the probabilities.
SELECT ok((SELECT abs(avg(click::int) - avg(p_ctr)) < 0.002 FROM syn_tap), 'mean click = mean p_ctr');
SELECT ok((SELECT abs(avg(conversion::int) - avg(p_cvr)) < 0.01 FROM syn_tap WHERE click), 'mean conversion = mean p_cvr among clicks');

-- Structure: a user's click propensity is mostly shared across scenes ...
CREATE TEMP TABLE syn_user AS
SELECT features[1] AS usr, scene, avg(ln(p_ctr / (1 - p_ctr))) AS lc, count(*) AS n
  FROM syn_tap GROUP BY 1, 2;
SELECT ok((SELECT corr(s.lc, f.lc) > 0.6 FROM syn_user s JOIN syn_user f USING (usr)
            WHERE s.scene = 'search' AND f.scene = 'feeds' AND s.n >= 30 AND f.n >= 30),
          'users who click in search click in feeds');
SELECT ok((SELECT corr(s.lc, v.lc) > 0.6 FROM syn_user s JOIN syn_user v USING (usr)
            WHERE s.scene = 'search' AND v.scene = 'video' AND s.n >= 30 AND v.n >= 10),
          'users who click in search click in video (the small scene can borrow)');
-- ... conversion propensity differs from click propensity ...
SELECT ok((SELECT abs(corr(ln(p_ctr / (1 - p_ctr)), ln(p_cvr / (1 - p_cvr)))) < 0.5 FROM syn_tap),
          'click and conversion logits are correlated only partly');
-- ... the context matters ...
SELECT ok((SELECT max(a) - min(a) BETWEEN 0.1 AND 1 FROM (SELECT avg(ln(p_ctr / (1 - p_ctr))) AS a
                                                 FROM syn_tap, unnest(features) f
                                                WHERE scene = 'search' AND f LIKE 'hour=%' GROUP BY f) x),
          'hour of day moves the CTR');
-- ... and slots (days) drift mildly.
SELECT ok((SELECT max(a) - min(a) BETWEEN 0.01 AND 0.3
             FROM (SELECT avg(ln(p_ctr / (1 - p_ctr))) AS a FROM syn_tap
                    WHERE scene = 'search' GROUP BY slot) x),
          'per-slot drift is mild');

SELECT * FROM finish();
ROLLBACK;
