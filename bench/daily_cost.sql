-- bench/daily_cost.sql: one more day of the model of variant :hy_variant
-- (section 3 of bench/daily.sql), in a new session and one process, its
-- backend's CPU seconds and peak memory (the view dl_hy_proc) into dl_hy_cost.
\connect
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
SET mtms.train_workers = 0;
SELECT 'dl_hy_' || replace(:'hy_variant', '+', '_') AS hy_model \gset
SELECT cpu_seconds AS hy_cpu0, clock_timestamp() AS hy_t0 FROM dl_hy_proc \gset
SELECT count(*) AS hy_results FROM mtms_train(:'hy_model', ('dl_hy_day' || :hy_slots)::regclass) \gset
INSERT INTO dl_hy_cost
SELECT :'hy_variant',
       (SELECT count(*) FROM mtms_embedding e JOIN mtms_model m USING (model_id)
         WHERE m.name = :'hy_model' AND e.version = m.active_version),
       (SELECT count(*) FROM mtms_feature_count c JOIN mtms_model m USING (model_id)
         WHERE m.name = :'hy_model' AND c.version = m.active_version),
       cpu_seconds - :hy_cpu0, extract(epoch FROM clock_timestamp() - :'hy_t0'), vm_hwm_mb, rss_shmem_mb
  FROM dl_hy_proc;
