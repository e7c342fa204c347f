/*
 * access.h
 *    Who may do what with a model: its owner, the roles granted 'score' or
 *    'train' in its ACL (an aclitem[] checked with PostgreSQL's own
 *    aclmask), superusers and the extension's owner.  The same rules back
 *    the row security policies of the catalog tables (mtms_model_access).
 */
#ifndef MTMS_ACCESS_H
#define MTMS_ACCESS_H

#include "catalog.h"
#include "utils/acl.h"

/*
 * The ACL bit of each grantable privilege: 'score' is SELECT ("r" in the
 * acl column), 'train' is UPDATE ("w"); 'train' includes 'score'.
 */
#define MTMS_ACL_SCORE		ACL_SELECT
#define MTMS_ACL_TRAIN		ACL_UPDATE

/* Whether role has privilege on a model with this owner and acl (NULL: none). */
extern bool mtms_role_has_privilege(Oid role, Oid owner, const Acl *acl,
									MtmsPrivilege privilege);

/*
 * ERROR (42501, naming the model and how to get the right) unless the
 * current user has privilege on the model.  On a database still at
 * extension version 0.1 (no acl column) scoring needs SELECT on the four
 * tables and everything else ownership, as 0.1 had it.
 */
extern void mtms_check_privilege(const MtmsModelMeta *m, MtmsPrivilege privilege);

/* Parse 'score' / 'train'; ERROR naming the value otherwise. */
extern AclMode mtms_privilege_from_name(const char *name);

#endif							/* MTMS_ACCESS_H */
