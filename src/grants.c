/*
 * grants.c
 *    Changing who may use a model: mtms_grant, mtms_revoke and
 *    mtms_alter_owner.
 *
 * A model's grants are an aclitem[] in mtms_model.acl, edited with the
 * functions PostgreSQL uses for its own objects (aclupdate, aclnewowner),
 * with the owner as grantor: 'score' is the SELECT bit ("r"), 'train' the
 * UPDATE bit ("w").  aclexplode(acl) lists them.  Only the owner (or a
 * superuser) grants, revokes and gives a model away, with the rules of
 * ALTER ... OWNER TO.  Every change is announced to all sessions, so a
 * revoked role is refused from its next statement on.
 */
#include "mtms.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

#include "access.h"
#include "catalog.h"

static void
check_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
}

/* A role argument (regrole) that names an existing role. */
static Oid
check_role(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	Oid			role;

	check_arg(fcinfo, argno, argname);
	role = PG_GETARG_OID(argno);
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", role)));
	return role;
}

/* The model of argument 0, locked, for its owner. */
static MtmsModelMeta *
model_for_owner(FunctionCallInfo fcinfo)
{
	MtmsModelMeta *m;

	check_arg(fcinfo, 0, "model");
	if (!mtms_catalog_has_acl())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the installed mtms schema has no model grants"),
				 errhint("Run ALTER EXTENSION mtms UPDATE.")));
	m = mtms_model_lookup_for_change(text_to_cstring(PG_GETARG_TEXT_PP(0)),
									 MTMS_PRIV_OWNER);
	return m;
}

/* Write a model's owner and acl, as mtms's own change. */
static void
store_owner_acl(const MtmsModelMeta *m, Oid owner, Acl *acl)
{
	MtmsCatalogScope scope;
	Oid			types[3] = {INT4OID, REGROLEOID, ACLITEMARRAYOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', acl ? ' ' : 'n'};
	int			guard;
	int			rc;

	args[0] = Int32GetDatum(m->model_id);
	args[1] = ObjectIdGetDatum(owner);
	args[2] = PointerGetDatum(acl);

	mtms_catalog_scope_begin(&scope, true);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	guard = mtms_guard_search_path();
	rc = SPI_execute_with_args(psprintf("UPDATE %s.mtms_model SET owner = $2, acl = $3"
										" WHERE model_id = $1", mtms_schema_quoted()),
							   3, types, args, nulls, false, 0);
	if (rc != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not update model \"%s\"", m->name);
	mtms_unguard_search_path(guard);
	SPI_finish();
	mtms_catalog_scope_end(&scope);
	mtms_catalog_changed();
}

/* Grant (is_grant) or revoke a privilege of role on the model. */
static void
change_grant(FunctionCallInfo fcinfo, bool is_grant)
{
	MtmsModelMeta *m = model_for_owner(fcinfo);
	Oid			role = check_role(fcinfo, 1, "role");
	AclMode		privilege;
	AclItem		item;
	Acl		   *acl;

	check_arg(fcinfo, 2, "privilege");
	privilege = mtms_privilege_from_name(text_to_cstring(PG_GETARG_TEXT_PP(2)));

	item.ai_grantee = role;
	item.ai_grantor = m->owner;
	ACLITEM_SET_PRIVS_GOPTIONS(item, privilege, ACL_NO_RIGHTS);
	acl = aclupdate(m->acl ? m->acl : make_empty_acl(), &item,
					is_grant ? ACL_MODECHG_ADD : ACL_MODECHG_DEL,
					m->owner, DROP_RESTRICT);
	store_owner_acl(m, m->owner, ACL_NUM(acl) > 0 ? acl : NULL);
}

/*
 * mtms_grant(model text, role regrole, privilege text): allow role to
 * 'score' with the model (mtms_score, mtms_evaluate, mtms_versions, its
 * rows) or to 'train' it (new versions, mtms_rollback; includes 'score').
 */
PG_FUNCTION_INFO_V1(mtms_grant);
Datum
mtms_grant(PG_FUNCTION_ARGS)
{
	change_grant(fcinfo, true);
	PG_RETURN_VOID();
}

/* mtms_revoke(model text, role regrole, privilege text) */
PG_FUNCTION_INFO_V1(mtms_revoke);
Datum
mtms_revoke(PG_FUNCTION_ARGS)
{
	change_grant(fcinfo, false);
	PG_RETURN_VOID();
}

/*
 * mtms_alter_owner(model text, new_owner regrole), with the rules of
 * ALTER ... OWNER TO: the caller owns the model and (unless superuser) is a
 * member of the new owner.  The grants move with it, as aclnewowner does
 * for tables.
 */
PG_FUNCTION_INFO_V1(mtms_alter_owner);
Datum
mtms_alter_owner(PG_FUNCTION_ARGS)
{
	MtmsModelMeta *m = model_for_owner(fcinfo);
	Oid			new_owner = check_role(fcinfo, 1, "new_owner");

	if (!superuser() && !is_member_of_role(GetUserId(), new_owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be member of role \"%s\" to give it model \"%s\"",
						GetUserNameFromId(new_owner, false), m->name)));
	if (new_owner == m->owner)
		PG_RETURN_VOID();
	store_owner_acl(m, new_owner,
					m->acl ? aclnewowner(m->acl, m->owner, new_owner) : NULL);
	PG_RETURN_VOID();
}
