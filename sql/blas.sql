-- The BLAS mtms loads itself (src/blas.c): its kernels, how they were
-- chosen, their check against a plain product, their speed.  The test hook
-- mtms.blas_test_hook is read when the library loads, so each case runs in
-- a new session (\c), set before the session's first mtms call.  The
-- expected kernels assume an x86 CPU with AVX2 or AVX-512 (SkylakeX,
-- Cooperlake or Haswell kernels are better than Prescott's).
SELECT library, version ~ '^[0-9]+\.[0-9]+' AS has_version, threads,
       check_passed, check_max_error < 1e-5 AS within_bound, gflops > 1 AS measured,
       kernels = openblas_choice OR kernels_source = 'chosen by mtms' AS consistent,
       cpu_class IN ('avx2', 'avx512') AS vector_cpu
  FROM mtms_blas_info();

-- OpenBLAS does not know the CPU and falls back to Prescott: mtms reloads
-- it with the kernels of the CPU's class, checked.
\c
SET mtms.blas_test_hook = 'unknown_cpu';
SELECT openblas_choice, kernels_source,
       kernels IN ('SkylakeX', 'Cooperlake', 'Haswell') AS better_kernels,
       check_passed, rejected_kernels
  FROM mtms_blas_info();

-- The user's OPENBLAS_CORETYPE always wins.
\c
SET mtms.blas_test_hook = 'user_prescott';
SELECT kernels, kernels_source, environment_coretype FROM mtms_blas_info();

-- mtms's choice fails its check: it keeps what works (OpenBLAS's own
-- choice) and warns once (the message names the kernels; shown here by
-- its SQLSTATE only, the kernels differ between CPUs).
\c
SET mtms.blas_test_hook = 'unknown_cpu,fail_check';
\set VERBOSITY sqlstate
SELECT kernels, kernels_source, rejected_kernels IS NOT NULL AS rejected, check_passed
  FROM mtms_blas_info();
\set VERBOSITY default
-- and training and scoring work on those kernels
CREATE TABLE blas_s AS SELECT * FROM mtms_synthetic_samples(2000, 1);
SET client_min_messages = warning;
SELECT mtms_create_model('blas_m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                         '{"max_epochs": 1}');
SELECT count(*) FROM mtms_train('blas_m', 'blas_s');
SELECT count(*) FILTER (WHERE p > 0 AND p < 1) AS probabilities
  FROM (SELECT mtms_score('blas_m', scene, 'ctr', features) AS p FROM blas_s LIMIT 100) s;
SELECT mtms_drop_model('blas_m');
DROP TABLE blas_s;
