-- The numerical core (optimizer.c, tower.c, embedding_store.c): internal
-- self-checks run in the backend, then corrupt serialized states fed in
-- from SQL.
\set SHOW_CONTEXT never

CREATE TEMP TABLE nn_check AS SELECT * FROM mtms_nn_selftest();

-- every check passes
SELECT check_name, passed FROM nn_check;

-- errors and losses stay within their bounds
SELECT check_name, detail < bound AS within_bound
  FROM nn_check
  JOIN (VALUES ('adam_matches_reference', 1e-5),
               ('adagrad_matches_reference', 1e-6),
               ('tower_weight_gradient', 1e-2),    -- max relative error
               ('tower_input_gradient', 1e-2),
               ('tower_predict1_matches_batch', 1e-5),
               ('tower_adam_learns_logistic', 0.15), -- final mean BCE
               ('tower_average', 1e-6),
               ('tower_remap_input', 1e-5),
               ('emb_merge', 1e-7),
               ('joined_keys_match_dense', 1e-4),
               ('blas_kernels_match_reference', 1e-5),    -- max relative error
               ('blas_check_rejects_wrong_product', 1)) AS b(check_name, bound) USING (check_name)
 ORDER BY check_name;

-- counts: rows created, rows changed by one batch, prefixes rejected
SELECT check_name, detail
  FROM nn_check
 WHERE check_name IN ('emb_find_create_count', 'emb_apply_touched_rows_only',
                      'emb_serialize_roundtrip', 'emb_many_rows',
                      'tower_truncated_state_rejected',
                      'emb_truncated_state_rejected')
 ORDER BY check_name;

DROP TABLE nn_check;

-- valid states decode
SELECT mtms_nn_deserialize_check(mtms_nn_sample_state('tower'));
SELECT mtms_nn_deserialize_check(mtms_nn_sample_state('embedding'));
SELECT length(mtms_nn_sample_state('tower')) AS tower_bytes,
       length(mtms_nn_sample_state('embedding')) AS embedding_bytes;

-- every strict prefix of either state is rejected with data_corrupted
DO $$
DECLARE
    kind text;
    s bytea;
    n int;
    rejected int;
BEGIN
    FOREACH kind IN ARRAY ARRAY['tower', 'embedding'] LOOP
        s := mtms_nn_sample_state(kind);
        n := length(s);
        rejected := 0;
        FOR len IN 0 .. n - 1 LOOP
            BEGIN
                PERFORM mtms_nn_deserialize_check(substring(s FROM 1 FOR len));
            EXCEPTION WHEN data_corrupted THEN
                rejected := rejected + 1;
            END;
        END LOOP;
        RAISE NOTICE '%: % of % prefixes rejected', kind, rejected, n;
    END LOOP;
END
$$;

-- truncated, empty, trailing bytes
SELECT mtms_nn_deserialize_check(substring(mtms_nn_sample_state('tower') FROM 1 FOR 100));
SELECT mtms_nn_deserialize_check(substring(mtms_nn_sample_state('embedding') FROM 1 FOR 139));
SELECT mtms_nn_deserialize_check(substring(mtms_nn_sample_state('embedding') FROM 1 FOR 10));
SELECT mtms_nn_deserialize_check('\x'::bytea);
SELECT mtms_nn_deserialize_check(mtms_nn_sample_state('tower') || '\x00'::bytea);
-- bad magic number
SELECT mtms_nn_deserialize_check('\x0000000001000000'::bytea);
-- embedding header: dimension 0; 1000 rows, beyond the data; absurd counts
SELECT mtms_nn_deserialize_check(overlay(mtms_nn_sample_state('embedding')
       PLACING '\x00000000'::bytea FROM 9 FOR 4));
SELECT mtms_nn_deserialize_check(overlay(mtms_nn_sample_state('embedding')
       PLACING '\xe803000000000000'::bytea FROM 25 FOR 8));
SELECT mtms_nn_deserialize_check(overlay(mtms_nn_sample_state('embedding')
       PLACING '\xffffffffffffff7f'::bytea FROM 25 FOR 8));
SELECT mtms_nn_deserialize_check(overlay(mtms_nn_sample_state('embedding')
       PLACING '\xffffffffffffffff'::bytea FROM 25 FOR 8));
-- embedding rows: the third row repeats the second row's key
SELECT mtms_nn_deserialize_check(overlay(s PLACING substring(s FROM 81 FOR 8) FROM 129 FOR 8))
  FROM (SELECT mtms_nn_sample_state('embedding') AS s) AS x;
-- tower header: unsupported version, 255 layers, a layer of -1 units,
-- two outputs
SELECT mtms_nn_deserialize_check(overlay(mtms_nn_sample_state('tower')
       PLACING '\x02000000'::bytea FROM 5 FOR 4));
SELECT mtms_nn_deserialize_check(overlay(mtms_nn_sample_state('tower')
       PLACING '\xff000000'::bytea FROM 9 FOR 4));
SELECT mtms_nn_deserialize_check(overlay(mtms_nn_sample_state('tower')
       PLACING '\xffffffff'::bytea FROM 17 FOR 4));
SELECT mtms_nn_deserialize_check(overlay(mtms_nn_sample_state('tower')
       PLACING '\x02000000'::bytea FROM 25 FOR 4));
-- unknown state kind
SELECT mtms_nn_sample_state('graph');
