/*
 * access.c
 *    Privileges on models (see access.h) and the functions the catalog
 *    tables' row security policies call.
 *
 * A model's owner (and every member of the owner role) may do everything
 * with it; so may superusers and members of the role that owns the catalog
 * tables (the extension's owner).  Other roles get 'score' or 'train'
 * through mtms_grant, recorded in mtms_model.acl as ordinary aclitems and
 * checked with aclmask, so role membership, PUBLIC and grantors work as
 * for tables.  The database owner may read every model's rows (so that
 * pg_dump by the database owner dumps them all), never change them.
 */
#include "access.h"

#include "access/htup_details.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

#include "catalog_tables.h"

static bool
is_owner_or_admin(Oid role, Oid owner)
{
	return superuser_arg(role) ||
		has_privs_of_role(role, owner) ||
		has_privs_of_role(role, mtms_catalog_owner());
}

bool
mtms_role_has_privilege(Oid role, Oid owner, const Acl *acl,
						MtmsPrivilege privilege)
{
	AclMode		want;

	if (is_owner_or_admin(role, owner))
		return true;
	if (privilege == MTMS_PRIV_OWNER || acl == NULL)
		return false;
	want = privilege == MTMS_PRIV_SCORE ? (MTMS_ACL_SCORE | MTMS_ACL_TRAIN) : MTMS_ACL_TRAIN;
	return aclmask(acl, role, owner, want, ACLMASK_ANY) != 0;
}

/* 0.1 schema: reading a model needed SELECT on the four tables. */
static void
check_table_select(void)
{
	static const char *const tables[] = {"mtms_model", "mtms_version",
	"mtms_embedding", "mtms_tower"};

	for (int i = 0; i < (int) lengthof(tables); i++)
	{
		AclResult	r = pg_class_aclcheck(mtms_catalog_relid(tables[i]),
										  GetUserId(), ACL_SELECT);

		if (r != ACLCHECK_OK)
			aclcheck_error(r, OBJECT_TABLE, tables[i]);
	}
}

void
mtms_check_privilege(const MtmsModelMeta *m, MtmsPrivilege privilege)
{
	Oid			user = GetUserId();

	if (!m->has_acl && privilege == MTMS_PRIV_SCORE)
	{
		check_table_select();
		return;
	}
	if (mtms_role_has_privilege(user, m->owner, m->has_acl ? m->acl : NULL, privilege))
		return;

	if (privilege == MTMS_PRIV_OWNER || !m->has_acl)
	{
		char	   *owner = GetUserNameFromId(m->owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of model \"%s\"", m->name),
				 owner ? errdetail("Model \"%s\" is owned by role \"%s\".",
								   m->name, owner) : 0));
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s model \"%s\"",
					privilege == MTMS_PRIV_SCORE ? "score with" : "train", m->name),
			 errhint("The model's owner can allow it: mtms_grant('%s', '%s', '%s').",
					 m->name, GetUserNameFromId(user, false),
					 privilege == MTMS_PRIV_SCORE ? "score" : "train")));
}

AclMode
mtms_privilege_from_name(const char *name)
{
	if (strcmp(name, "score") == 0)
		return MTMS_ACL_SCORE;
	if (strcmp(name, "train") == 0)
		return MTMS_ACL_TRAIN;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown model privilege \"%s\"", name),
			 errhint("The privileges are 'score' (score, evaluate, read the model) and "
					 "'train' (train new versions, roll back; includes 'score').")));
	return 0;					/* keep the compiler quiet */
}

/* ---------------------------------------------------------------------
 * Row security
 * ---------------------------------------------------------------------
 */

static bool
is_database_owner(Oid role)
{
	HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(MyDatabaseId));
	Oid			dba;

	if (!HeapTupleIsValid(tup))
		return false;
	dba = ((Form_pg_database) GETSTRUCT(tup))->datdba;
	ReleaseSysCache(tup);
	return has_privs_of_role(role, dba);
}

/*
 * mtms_model_access(owner regrole, acl aclitem[], access text) -> boolean,
 * the condition of the catalog tables' policies: 'read' (the model's owner,
 * a role granted 'score' or 'train', the database owner) or 'write' (the
 * owner).
 */
PG_FUNCTION_INFO_V1(mtms_model_access);
Datum
mtms_model_access(PG_FUNCTION_ARGS)
{
	Oid			user = GetUserId();
	Oid			owner;
	Acl		   *acl;
	char	   *access;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		PG_RETURN_BOOL(false);
	owner = PG_GETARG_OID(0);
	acl = PG_ARGISNULL(1) ? NULL : PG_GETARG_ACL_P(1);
	access = text_to_cstring(PG_GETARG_TEXT_PP(2));

	if (strcmp(access, "write") == 0)
		PG_RETURN_BOOL(mtms_role_has_privilege(user, owner, NULL, MTMS_PRIV_OWNER));
	if (strcmp(access, "read") == 0)
		PG_RETURN_BOOL(mtms_role_has_privilege(user, owner, acl, MTMS_PRIV_SCORE) ||
					   is_database_owner(user));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown model access \"%s\"", access),
			 errhint("Use 'read' or 'write'.")));
	PG_RETURN_NULL();
}
