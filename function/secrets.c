/* secrets.c - the Parameters and Secrets Lambda Extension client.
 *
 * cJSON reads the extension's answer: a small, trusted document whose
 * SecretString has no reason to hold a U+0000 (see json.h for why the event
 * itself does not go through cJSON). */
#define _DEFAULT_SOURCE
#include "secrets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "clock.h"
#include "http.h"
#include "url.h"

#define SECRET_TIMEOUT_MS 5000
#define SECRET_MAX (64 * 1024) /* Secrets Manager's own limit on a secret */

/* A fixed reason for an error status of the extension (it passes Secrets
 * Manager's on: 400 for an unknown secret or a denied read).  Cannot fail;
 * the text is static. */
static const char *status_reason(int status)
{
    const char *why = "unexpected status";

    if (status == 400)
        why = "no such secret, or the role may not read it";
    else if (status == 401 || status == 403)
        why = "the extension refused the session token";
    else if (status == 404)
        why = "not found";
    else if (status == 429)
        why = "throttled";
    else if (status >= 500 && status <= 599)
        why = "the extension or Secrets Manager failed";
    return why;
}

rc_t secrets_get(const struct endpoint *endpoint, const char *secret_id, int64_t until_ms,
                 struct buf *out, char err[ERR_LEN])
{
    struct http_client *client = NULL;
    struct buf path, body;
    cJSON *doc = NULL;
    rc_t rc;

    buf_init(&path, 4096);
    buf_init(&body, SECRET_MAX * 2);
    buf_reset(out);
    const char *token = getenv("AWS_SESSION_TOKEN");
    if (!token || !*token) {
        snprintf(err, ERR_LEN, "AWS_SESSION_TOKEN is not set: the secrets extension needs it");
        rc = RC_CONFIG;
        goto out;
    }
    char http_err[ERR_LEN];
    if (!(client = http_new(endpoint->host, endpoint->port, NULL, http_err))) {
        /* http_new refuses a malformed host or port, or runs out of memory. */
        rc = strcmp(http_err, "out of memory") == 0 ? RC_NOMEM : RC_CONFIG;
        snprintf(err, ERR_LEN, "the secrets extension endpoint %.40s:%s: %.100s", endpoint->host,
                 endpoint->port, http_err);
        goto out;
    }
    /* Every wait, connecting included, ends by until_ms: the invocation's
     * answer must not be late because the extension hangs.  until_ms is the
     * Runtime API deadline's clock (real time). */
    int64_t left = until_ms - clock_epoch_ms();
    if (left <= 0) {
        snprintf(err, ERR_LEN, "no time left before the deadline to read secret %.100s", secret_id);
        rc = RC_TIMEOUT;
        goto out;
    }
    buf_appends(&path, "/secretsmanager/get?secretId=");
    url_append_encoded(&path, secret_id, strlen(secret_id));
    if ((rc = path.err) != RC_OK) {
        snprintf(err, ERR_LEN, "the secret id is too long");
        goto out;
    }
    const struct http_header headers[] = {{"X-Aws-Parameters-Secrets-Token", token}};
    const struct http_request req = {.method = "GET",
                                     .path = path.data,
                                     .headers = headers,
                                     .nheaders = 1,
                                     .timeout_ms =
                                         left < SECRET_TIMEOUT_MS ? (int)left : SECRET_TIMEOUT_MS,
                                     .retry_safe = 1};
    struct http_response resp = {.body = &body};
    rc = http_exchange(client, &req, &resp, http_err);
    if (rc) {
        snprintf(err, ERR_LEN, "secrets extension at %.40s:%s: %.180s", endpoint->host,
                 endpoint->port, http_err);
        rc = rc == RC_NOMEM ? RC_NOMEM : clock_epoch_ms() >= until_ms ? RC_TIMEOUT : RC_IO;
        goto out;
    }
    if (resp.status != 200) {
        /* The status and a reason of ours: the body of an error answer is
         * never quoted, since nothing says what it holds (a password was
         * seen in one) or that it is UTF-8. */
        snprintf(err, ERR_LEN, "secrets extension answered %d (%s) for %.100s", resp.status,
                 status_reason(resp.status), secret_id);
        rc = RC_PROTOCOL;
        goto out;
    }
    doc = cJSON_ParseWithLength(body.data, body.len);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(doc, "SecretString");
    if (!cJSON_IsString(s) || !s->valuestring) {
        snprintf(err, ERR_LEN, "secret %.100s has no SecretString (a binary secret?)", secret_id);
        rc = RC_PROTOCOL;
        goto out;
    }
    if ((rc = buf_appends(out, s->valuestring)) != RC_OK)
        snprintf(err, ERR_LEN, "secret %.100s is too large", secret_id);
out:
    if (doc) {
        /* Wipe the decoded secret inside cJSON's tree before freeing it. */
        cJSON *sv = cJSON_GetObjectItemCaseSensitive(doc, "SecretString");
        if (cJSON_IsString(sv) && sv->valuestring)
            explicit_bzero(sv->valuestring, strlen(sv->valuestring));
        cJSON_Delete(doc);
    }
    buf_wipe(&body);
    buf_free(&path);
    http_free(client);
    return rc;
}

/* Appends " key='value'" in libpq's conninfo syntax: quotes and backslashes
 * escaped with a backslash. */
static void append_conninfo(struct buf *b, const char *key, const char *value)
{
    buf_printf(b, "%s%s='", b->len ? " " : "", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\'' || *p == '\\')
            buf_appendc(b, '\\');
        buf_appendc(b, *p);
    }
    buf_appendc(b, '\'');
}

rc_t secrets_conninfo_from_json(const char *json, size_t len, struct buf *conninfo,
                                char err[ERR_LEN])
{
    static const char *const fields[][2] = {{"host", "host"},
                                            {"port", "port"},
                                            {"username", "user"},
                                            {"password", "password"},
                                            {"dbname", "dbname"}};
    rc_t rc = RC_OK;
    cJSON *doc = cJSON_ParseWithLength(json, len);

    buf_reset(conninfo);
    if (!cJSON_IsObject(doc)) {
        snprintf(err, ERR_LEN, "the database secret is not a JSON object");
        rc = RC_CONFIG;
        goto out;
    }
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, fields[i][0]);
        char num[32];
        if (cJSON_IsString(v) && v->valuestring && *v->valuestring) {
            append_conninfo(conninfo, fields[i][1], v->valuestring);
        } else if (cJSON_IsNumber(v) && strcmp(fields[i][0], "port") == 0 && v->valuedouble >= 1 &&
                   v->valuedouble <= 65535) {
            snprintf(num, sizeof num, "%d", (int)v->valuedouble);
            append_conninfo(conninfo, fields[i][1], num);
        } else if (strcmp(fields[i][0], "username") == 0 || strcmp(fields[i][0], "host") == 0) {
            snprintf(err, ERR_LEN, "the database secret lacks \"%s\"", fields[i][0]);
            rc = RC_CONFIG;
            goto out;
        }
    }
    if (conninfo->err) {
        rc = conninfo->err;
        snprintf(err, ERR_LEN, "the database secret is too large");
    }
out:
    if (doc) {
        const cJSON *pw = cJSON_GetObjectItemCaseSensitive(doc, "password");
        if (cJSON_IsString(pw) && pw->valuestring)
            explicit_bzero(pw->valuestring, strlen(pw->valuestring));
        cJSON_Delete(doc);
    }
    return rc;
}

rc_t secrets_db_conninfo(const struct endpoint *endpoint, const char *secret_id, int64_t until_ms,
                         struct buf *conninfo, char err[ERR_LEN])
{
    struct buf secret;
    buf_init(&secret, SECRET_MAX);
    rc_t rc = secrets_get(endpoint, secret_id, until_ms, &secret, err);
    if (!rc)
        rc = secrets_conninfo_from_json(secret.data, secret.len, conninfo, err);
    buf_wipe(&secret);
    return rc;
}
