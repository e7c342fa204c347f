-- mtms upgrade script 0.2 -> 0.3.
--
-- 0.2 landed on main and may be installed; every change since is written
-- here, so that ALTER EXTENSION mtms UPDATE brings a 0.2 (or, through
-- mtms--0.1--0.2.sql, a 0.1) database to exactly what CREATE EXTENSION mtms
-- gives a new one.  Sections by concern; each says what it adds.

\echo Use "ALTER EXTENSION mtms UPDATE TO '0.3'" to load this file. \quit
