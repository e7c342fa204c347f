-- bench/kuairand_setup.sql: MTMS samples from the KuaiRand-Pure exposure
-- logs (bench/kuairand.sh; the raw tables kr_log, kr_user, kr_video are
-- loaded by bench/kuairand_run.py from ../shared/data/kuairand, never
-- copied into the repository).
--
-- Protocol:
--   scene       tab, the app scenario: tab1, tab0, tab4, tab6, tab2 (each
--               more than 1% of the rows); the ten rare tabs folded into
--               'other'
--   click       is_click
--   conversion  is_click AND long_view
--   features    from the log: user, video, hour (of hourmin);
--               from the user table: active (user_active_degree), lowact,
--               streamer, vauthor, follow, fans, friend, register (the
--               *_range buckets), uf (multi-valued: onehot_feat0..17 as
--               'uf=<k>_<value>');
--               from the video table: author, vtype, upload, music, tag
--               (multi-valued, the comma list), dur (log2 of the duration
--               in seconds); NULL values are left out
--   slot        day number: 2022-04-25 is 1, 2022-05-08 is 14
--   tab         the raw tab, 'tab0' .. 'tab14' (kr_train_tabs / kr_test_tabs:
--               the same samples with all 15 tabs as scenes)
--   train       days 1-11 (2022-04-25 .. 05-05); test days 12-14 (05-06 .. 05-08)
-- Rows are in time order, as a log would be.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

DROP TABLE IF EXISTS kr_samples CASCADE;
CREATE TABLE kr_samples AS
SELECT (to_date(l.date::text, 'YYYYMMDD') - date '2022-04-24') AS slot,
       CASE WHEN l.tab IN (0, 1, 2, 4, 6) THEN 'tab' || l.tab ELSE 'other' END AS scene,
       'tab' || l.tab AS tab,
       array_remove(ARRAY[
           'user=' || l.user_id,
           'video=' || l.video_id,
           'hour=' || (l.hourmin / 100),
           'active=' || u.user_active_degree,
           'lowact=' || u.is_lowactive_period,
           'streamer=' || u.is_live_streamer,
           'vauthor=' || u.is_video_author,
           'follow=' || u.follow_user_num_range,
           'fans=' || u.fans_user_num_range,
           'friend=' || u.friend_user_num_range,
           'register=' || u.register_days_range,
           'author=' || v.author_id,
           'vtype=' || v.video_type,
           'upload=' || v.upload_type,
           'music=' || v.music_type,
           'dur=' || floor(log(2.0, v.video_duration::numeric / 1000 + 1))::int], NULL)
       || ARRAY(SELECT 'uf=' || o.i || '_' || o.val
                  FROM unnest(ARRAY[u.onehot_feat0, u.onehot_feat1, u.onehot_feat2, u.onehot_feat3,
                                    u.onehot_feat4, u.onehot_feat5, u.onehot_feat6, u.onehot_feat7,
                                    u.onehot_feat8, u.onehot_feat9, u.onehot_feat10, u.onehot_feat11,
                                    u.onehot_feat12, u.onehot_feat13, u.onehot_feat14, u.onehot_feat15,
                                    u.onehot_feat16, u.onehot_feat17]) WITH ORDINALITY AS o(val, i)
                 WHERE o.val IS NOT NULL)
       || ARRAY(SELECT 'tag=' || x FROM unnest(string_to_array(v.tag, ',')) x WHERE x <> '')
         AS features,
       l.is_click = 1 AS click,
       l.is_click = 1 AND l.long_view = 1 AS conversion
  FROM kr_log l
  LEFT JOIN kr_user u ON u.user_id = l.user_id::text
  LEFT JOIN kr_video v ON v.video_id = l.video_id::text
 ORDER BY l.time_ms, l.user_id, l.video_id;

CREATE VIEW kr_train AS SELECT * FROM kr_samples WHERE slot <= 11;
CREATE VIEW kr_test AS SELECT * FROM kr_samples WHERE slot >= 12;
CREATE VIEW kr_train_tabs AS
SELECT slot, tab AS scene, features, click, conversion FROM kr_samples WHERE slot <= 11;
CREATE VIEW kr_test_tabs AS
SELECT slot, tab AS scene, features, click, conversion FROM kr_samples WHERE slot >= 12;
VACUUM ANALYZE kr_samples;

SELECT scene, count(*) FILTER (WHERE slot <= 11) AS train, count(*) FILTER (WHERE slot >= 12) AS test,
       round(avg(click::int) FILTER (WHERE slot <= 11), 3) AS ctr,
       round(avg(conversion::int) FILTER (WHERE click AND slot <= 11), 3) AS cvr
  FROM kr_samples GROUP BY scene ORDER BY count(*) DESC;
