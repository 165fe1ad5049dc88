/* etl_creds.c - the handler's credentials: the masking keys (given directly
 * or read from their secret) and the database secret, read on the first
 * invocation and again when the database refuses the credentials it holds
 * (a rotation).  No secret is ever quoted in err or a log line. */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "etl_int.h"
#include "mask.h"
#include "secrets.h"

/* Logs the key ids of the masking keys now in use (ids only, never a key),
 * and warns when MASKING_KEY_ID names another id than the keyset document's
 * current key, which wins (keyset.h).  Cannot fail. */
static void log_keys(const struct etl *e)
{
    char retired[KEYSET_MAX * (MASK_KEY_ID_MAX + 1) + 1];
    struct buf b;
    const char *current = mask_key_id(keyset_current(e->masking));

    buf_wrap(&b, retired, sizeof retired);
    for (size_t i = 1; i < keyset_count(e->masking); i++)
        buf_printf(&b, "%s%s", i > 1 ? "," : "", mask_key_id(keyset_key(e->masking, i)));
    log_at(e->lg, LOG_INFO, "masking keys", LF_STR("current", current), LF_STR("retired", retired));
    if (e->cfg.masking_key_id_env && strcmp(e->cfg.masking_key_id_env, current) != 0)
        log_at(e->lg, LOG_WARN,
               "MASKING_KEY_ID names another key than the keyset document's current one, "
               "which masks",
               LF_STR("MASKING_KEY_ID", e->cfg.masking_key_id_env), LF_STR("current", current));
}

rc_t creds_init(struct etl *e, char err[ERR_LEN])
{
    if (e->cfg.masking_key) {
        e->masking = keyset_load("MASKING_KEY", e->cfg.masking_key, strlen(e->cfg.masking_key),
                                 e->cfg.masking_key_id_env, e->cfg.masking_keys_retired, err);
        /* The key copies are no longer needed: wipe them now rather than at exit. */
        config_free(&e->cfg);
        if (!e->masking)
            return RC_CONFIG;
        log_keys(e);
        return RC_OK;
    }
    if (e->cfg.masking_keys_retired && keyset_check_retired(e->cfg.masking_keys_retired, err))
        return RC_CONFIG;
    return RC_OK;
}

/* Reads the database secret (DB_SECRET_ID) into the sink's settings, every
 * wait ending by until_ms.  *changed says whether it differs from what was
 * read before (always 1 the first time).  Returns RC_OK, or the failure with
 * err filled (never quoting the secret). */
static rc_t read_db_secret(struct etl *e, int64_t until_ms, int *changed, char err[ERR_LEN])
{
    struct buf value;
    unsigned char digest[32];
    unsigned int digest_len = 0;
    rc_t rc;

    *changed = 0;
    buf_init(&value, 64 * 1024);
    rc = secrets_db_conninfo(&e->cfg.secrets_endpoint, e->cfg.db_secret_id, until_ms, &value, err);
    if (rc)
        goto out;
    if (EVP_Digest(value.data, value.len, digest, &digest_len, EVP_sha256(), NULL) != 1 ||
        digest_len != sizeof digest) {
        snprintf(err, ERR_LEN, "cannot hash the database settings");
        rc = RC_CRYPTO;
        goto out;
    }
    *changed = !e->secrets_loaded || CRYPTO_memcmp(digest, e->db_digest, sizeof digest) != 0;
    if (*changed) {
        if ((rc = pg_sink_set_conninfo(e->sink, value.data)) != RC_OK) {
            snprintf(err, ERR_LEN, "out of memory");
            goto out;
        }
        memcpy(e->db_digest, digest, sizeof digest);
    }
out:
    OPENSSL_cleanse(digest, sizeof digest);
    buf_wipe(&value);
    return rc;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\n' || c == '\r';
}

/* Reads the masking secret (MASKING_KEY_SECRET_ID) into e->masking, every
 * wait ending by until_ms.  Returns RC_OK, or the failure with err filled. */
static rc_t read_masking_secret(struct etl *e, int64_t until_ms, char err[ERR_LEN])
{
    struct buf value;
    rc_t rc;

    buf_init(&value, 64 * 1024);
    rc = secrets_get(&e->cfg.secrets_endpoint, e->cfg.masking_key_secret_id, until_ms, &value, err);
    if (!rc) {
        /* Surrounding white space is tolerated (a key pasted with a newline). */
        size_t a = 0, z = value.len;
        while (a < z && is_blank(value.data[a]))
            a++;
        while (z > a && is_blank(value.data[z - 1]))
            z--;
        e->masking = keyset_load("the masking secret", value.data + a, z - a,
                                 e->cfg.masking_key_id_env, e->cfg.masking_keys_retired, err);
        if (!e->masking)
            rc = RC_CONFIG;
        else
            log_keys(e);
    }
    buf_wipe(&value);
    return rc;
}

rc_t creds_load(struct etl *e, int64_t until_ms, char err[ERR_LEN])
{
    rc_t rc;
    int changed;

    if (e->secrets_loaded)
        return RC_OK;
    if (e->cfg.db_secret_id && (rc = read_db_secret(e, until_ms, &changed, err)) != RC_OK)
        return rc;
    if (e->cfg.masking_key_secret_id && !e->masking) {
        if ((rc = read_masking_secret(e, until_ms, err)) != RC_OK)
            return rc;
        config_free(&e->cfg); /* the retired keys' copy */
    }
    e->secrets_loaded = 1;
    return RC_OK;
}

rc_t creds_commit_again(struct etl *e, int64_t until_ms, char err[ERR_LEN])
{
    char why[ERR_LEN];
    int changed = 0;
    rc_t rc;

    log_at(e->lg, LOG_WARN, "the database refused the credentials: reading the secret again",
           LF_STR("error", err));
    snprintf(why, sizeof why, "%s", err);
    rc = read_db_secret(e, until_ms, &changed, err);
    if (rc) {
        log_at(e->lg, LOG_ERROR, "cannot read the database secret again", LF_STR("error", err));
        /* err quotes no response text (secrets.h): its start says why. */
        char again[ERR_LEN];
        snprintf(again, sizeof again, "%s", err);
        snprintf(err, ERR_LEN, "%.140s; reading the secret again failed: %.80s", why, again);
        return RC_DB;
    }
    if (!changed) {
        snprintf(err, ERR_LEN,
                 "%.170s; the secret is unchanged (the extension caches it up to "
                 "SECRETS_MANAGER_TTL)",
                 why);
        return RC_DB;
    }
    log_msg(e->lg, LOG_INFO, "the database secret changed: writing the batch with it");
    return pg_batch_commit(e->sink, e->outcome, err);
}
