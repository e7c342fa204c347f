# mtms: PGXS build.
#
# OpenBLAS: we use Debian's *serial* OpenBLAS (libopenblas-serial-dev) so a
# backend never starts BLAS threads; PostgreSQL's parallel workers give the
# parallelism.  pkg-config finds it in its own directory (whatever the
# architecture's multiarch name: /usr/lib/<triplet>/openblas-serial).  mtms.so
# does not link it: _PG_init loads that very file with dlopen, after choosing
# its kernel set (src/blas.c), so its path is compiled in.  BLAS_PC_DIR=...
# points at another openblas.pc.

EXTENSION = mtms
MODULE_big = mtms

OBJS = \
	src/mtms.o \
	src/progress.o \
	src/blas.o \
	src/blas_info.o \
	src/catalog_tables.o \
	src/access.o \
	src/catalog.o \
	src/catalog_guard.o \
	src/grants.o \
	src/options.o \
	src/feature_parser.o \
	src/synthetic.o \
	src/auc.o \
	src/optimizer.o \
	src/tower.o \
	src/embedding_store.o \
	src/nn_selftest.o \
	src/model.o \
	src/train_rowset.o \
	src/train_loss.o \
	src/train_batch.o \
	src/train_state.o \
	src/train_validate.o \
	src/train_snapshot.o \
	src/train_serialize.o \
	src/train_aggregate.o \
	src/phase_embedding.o \
	src/phase_finetune.o \
	src/joined_keys.o \
	src/kept_rows.o \
	src/row_store.o \
	src/model_store.o \
	src/feature_hygiene.o \
	src/samples.o \
	src/unit_snapshot.o \
	src/train_unit.o \
	src/train_pass.o \
	src/train_stage.o \
	src/unit_train.o \
	src/unit_wire.o \
	src/train_memory.o \
	src/train_parallel.o \
	src/train_history.o \
	src/train_units.o \
	src/train_refit.o \
	src/train_dispatch.o \
	src/node_wire.o \
	src/wire_chunks.o \
	src/node_train.o \
	src/train_nodes.o \
	src/train.o \
	src/model_flat.o \
	src/model_shared_mem.o \
	src/model_shared.o \
	src/proj_shared.o \
	src/model_cache.o \
	src/score_projection.o \
	src/score.o \
	src/experiment.o \
	src/evaluate.o \
	src/training_info.o

# The extension's scripts, the way PostgreSQL's contrib ships them: the
# released install script mtms--0.1.sql stays as it was released, and every
# later change is an upgrade script mtms--A--B.sql.  CREATE EXTENSION runs
# the install script and then the upgrade chain up to default_version.
DATA = $(wildcard src/sql/mtms--*.sql)

REGRESS = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=mtms
ISOLATION = $(sort $(basename $(notdir $(wildcard specs/*.spec))))
ISOLATION_OPTS = --load-extension=mtms

BLAS_PC_DIR ?= $(firstword $(wildcard /usr/lib/*/openblas-serial/pkgconfig /usr/lib/openblas-serial/pkgconfig))
BLAS_CFLAGS := $(shell PKG_CONFIG_PATH=$(BLAS_PC_DIR) pkg-config --cflags openblas)
BLAS_LIBS := $(shell PKG_CONFIG_PATH=$(BLAS_PC_DIR) pkg-config --libs openblas)
BLAS_LIBDIR := $(shell PKG_CONFIG_PATH=$(BLAS_PC_DIR) pkg-config --variable=libdir openblas)

PG_CPPFLAGS = -I$(srcdir)/src $(BLAS_CFLAGS) \
	-DMTMS_OPENBLAS_LIB='"$(patsubst %/,%,$(BLAS_LIBDIR))/libopenblas.so.0"'
SHLIB_LINK = -ldl -lm

EXTRA_CLEAN = results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The hot phase-1 training loops (tower bias/ReLU passes, pooling, Adam,
# Adagrad) are plain C loops written for the vectoriser: -O3 vectorises them
# (GCC's -O2 leaves loops with run-time trip counts scalar), -fno-math-errno
# lets sqrtf vectorise.  Neither changes any float result.
src/tower.o src/phase_embedding.o src/embedding_store.o src/optimizer.o: CFLAGS += -O3 -fno-math-errno

# Every object depends on every header: few enough files that this costs
# nothing, and a changed struct can never leave a stale object behind.
$(OBJS): $(wildcard src/*.h)

# The whole test suite with mtms built under AddressSanitizer + UBSan, in a
# private copy of PostgreSQL (installs nothing, touches no running server).
.PHONY: sanitize
sanitize:
	bash test/sanitize.sh

# The fine-tune's keyed rows: plain loops the compiler
# vectorizes at -O3 (PGXS builds at -O2).
src/joined_keys.o: CFLAGS += -O3
