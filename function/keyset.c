/* keyset.c - the current masking key and the retired ones (keyset.h): the
 * two sources' formats, the checks that make a set consistent, and finding
 * the key a stored value's prefix names.
 *
 * cJSON reads the keyset document, as secrets.c reads the extension's
 * answer: a small document written by an operator, never message data. */
#define _DEFAULT_SOURCE
#include "keyset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <openssl/crypto.h>

#define KEYSET_WHERE_LEN 96 /* "MASKING_KEYS_RETIRED: item 16" and the like */
/* The shortest body of a masked value: base64url of the IV and one block. */
#define KEYSET_BODY_MIN ((2 * 16 * 4 + 2) / 3)

struct keyset {
    struct mask_key *key[KEYSET_MAX]; /* key[0]: the current key (NULL only while the set is
                                         built, or for keyset_check_retired); then the
                                         retired ones; all owned */
    size_t n;                         /* slots in use, key[0] counted */
};

/* The part a key plays in the set. */
enum keyset_role {
    KEYSET_ROLE_CURRENT, /* masks new values: key[0] */
    KEYSET_ROLE_RETIRED  /* only recovers values still stored under its id */
};

/* Returns 1 for the white space allowed around list items; cannot fail. */
static int keyset_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Returns the slot of the key whose id is id[0..n), or -1; cannot fail. */
static int keyset_slot(const struct keyset *ks, const char *id, size_t n)
{
    for (size_t i = 0; i < ks->n; i++) {
        const char *have = ks->key[i] ? mask_key_id(ks->key[i]) : NULL;
        if (have && strlen(have) == n && memcmp(have, id, n) == 0)
            return (int)i;
    }
    return -1;
}

/* Adds the key hex[0..hex_len) under the id id[0..id_len) in the given role.
 * `where` ("MASKING_KEYS_RETIRED: item 2") starts every message; an id is
 * quoted only once it is known to be a key id.  Returns RC_OK, or RC_CONFIG
 * with err filled (also when OpenSSL fails: mask_key_new does not tell). */
static rc_t keyset_add(struct keyset *ks, enum keyset_role role, const char *id, size_t id_len,
                       const char *hex, size_t hex_len, const char *where, char err[ERR_LEN])
{
    char id_z[MASK_KEY_ID_MAX + 1];
    char why[ERR_LEN];
    struct mask_key *k;
    int slot;
    rc_t rc = RC_CONFIG;

    if (!mask_key_id_valid_len(id, id_len)) {
        snprintf(err, ERR_LEN, "%s: the key id must be 1 to %d characters of [A-Za-z0-9]", where,
                 MASK_KEY_ID_MAX);
        goto out;
    }
    memcpy(id_z, id, id_len);
    id_z[id_len] = '\0';
    slot = keyset_slot(ks, id, id_len);
    if (slot == 0 && role == KEYSET_ROLE_RETIRED) {
        snprintf(err, ERR_LEN, "%s: key id \"%s\" is the current key's: it cannot be retired too",
                 where, id_z);
        goto out;
    }
    if (slot >= 0 || (role == KEYSET_ROLE_CURRENT && ks->key[0])) {
        snprintf(err, ERR_LEN, "%s: key id \"%s\" appears twice", where, id_z);
        goto out;
    }
    if (role == KEYSET_ROLE_RETIRED && ks->n >= KEYSET_MAX) {
        snprintf(err, ERR_LEN, "%s: more than %d keys in the set", where, KEYSET_MAX);
        goto out;
    }
    k = mask_key_new(hex, hex_len, id_z, why);
    if (!k) {
        snprintf(err, ERR_LEN, "%s (key id \"%s\"): %.150s", where, id_z, why);
        goto out;
    }
    if (role == KEYSET_ROLE_CURRENT)
        ks->key[0] = k;
    else
        ks->key[ks->n++] = k;
    rc = RC_OK;
out:
    return rc;
}

/* Adds the retired keys of a MASKING_KEYS_RETIRED value: items
 * id=<128 hex> separated by commas, white space around each allowed.
 * Returns RC_OK, or RC_CONFIG with err naming the item by its position. */
static rc_t keyset_add_list(struct keyset *ks, const char *spec, char err[ERR_LEN])
{
    char where[KEYSET_WHERE_LEN];
    const char *p = spec;
    unsigned item = 1;
    rc_t rc = RC_CONFIG;

    for (;; item++) {
        const char *end = strchr(p, ',');
        const char *stop = end ? end : p + strlen(p);
        const char *eq;

        while (p < stop && keyset_space(*p))
            p++;
        while (stop > p && keyset_space(stop[-1]))
            stop--;
        snprintf(where, sizeof where, "MASKING_KEYS_RETIRED: item %u", item);
        rc = RC_CONFIG;
        if (p == stop) {
            snprintf(err, ERR_LEN, "%s is empty: the list is id=<128 hex>[,id=<128 hex>...]",
                     where);
            goto out;
        }
        eq = memchr(p, '=', (size_t)(stop - p));
        if (!eq) {
            snprintf(err, ERR_LEN, "%s is not id=<128 hexadecimal characters>", where);
            goto out;
        }
        if ((rc = keyset_add(ks, KEYSET_ROLE_RETIRED, p, (size_t)(eq - p), eq + 1,
                             (size_t)(stop - eq - 1), where, err)) != RC_OK)
            goto out;
        if (!end)
            break;
        p = end + 1;
    }
    rc = RC_OK;
out:
    return rc;
}

/* Wipes the string values of a keyset document's "keys" before it is freed;
 * cannot fail. */
static void keyset_doc_wipe(cJSON *doc)
{
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    const cJSON *m;

    cJSON_ArrayForEach(m, keys)
    {
        if (cJSON_IsString(m) && m->valuestring)
            explicit_bzero(m->valuestring, strlen(m->valuestring));
    }
}

/* Adds every key of a keyset document {"current": ID, "keys": {ID: HEX,
 * ...}}: the one "current" names as the current key, the others retired.
 * Nothing else may be in the document.  Returns RC_OK, or RC_CONFIG /
 * RC_NOMEM with err filled (positions and checked ids only).  The parsed
 * key strings are wiped. */
static rc_t keyset_add_document(struct keyset *ks, const char *name, const char *doc_text, size_t n,
                                char err[ERR_LEN])
{
    char where[KEYSET_WHERE_LEN];
    cJSON *doc = cJSON_ParseWithLength(doc_text, n);
    const cJSON *cur = NULL, *keys = NULL, *m;
    const char *cur_id;
    unsigned i = 0;
    rc_t rc = RC_CONFIG;

    if (!cJSON_IsObject(doc)) {
        snprintf(err, ERR_LEN,
                 "%s: starts with '{' but is not a JSON object: a keyset document is "
                 "{\"current\":\"ID\",\"keys\":{\"ID\":\"<128 hex>\",...}}",
                 name);
        goto out;
    }
    cJSON_ArrayForEach(m, doc)
    {
        const cJSON **slot = m->string && strcmp(m->string, "current") == 0 ? &cur
                             : m->string && strcmp(m->string, "keys") == 0  ? &keys
                                                                            : NULL;
        if (!slot) {
            snprintf(err, ERR_LEN,
                     "%s: the keyset document holds a member other than \"current\" and "
                     "\"keys\"",
                     name);
            goto out;
        }
        if (*slot) {
            snprintf(err, ERR_LEN, "%s: the keyset document holds \"%s\" twice", name, m->string);
            goto out;
        }
        *slot = m;
    }
    if (!cJSON_IsString(cur) || !cur->valuestring ||
        !mask_key_id_valid_len(cur->valuestring, strlen(cur->valuestring))) {
        snprintf(err, ERR_LEN,
                 "%s: the keyset document's \"current\" must be a key id, 1 to %d characters "
                 "of [A-Za-z0-9]",
                 name, MASK_KEY_ID_MAX);
        goto out;
    }
    cur_id = cur->valuestring;
    if (!cJSON_IsObject(keys) || !keys->child) {
        snprintf(err, ERR_LEN, "%s: the keyset document's \"keys\" must be a non-empty object",
                 name);
        goto out;
    }
    cJSON_ArrayForEach(m, keys)
    {
        const char *id = m->string ? m->string : "";
        size_t id_len = strlen(id);
        enum keyset_role role = strcmp(id, cur_id) == 0 ? KEYSET_ROLE_CURRENT : KEYSET_ROLE_RETIRED;

        snprintf(where, sizeof where, "%s: \"keys\" member %u", name, ++i);
        if (mask_key_id_valid_len(id, id_len) && (!cJSON_IsString(m) || !m->valuestring)) {
            snprintf(err, ERR_LEN, "%s (key id \"%s\") is not a string", where, id);
            goto out;
        }
        if ((rc = keyset_add(ks, role, id, id_len, cJSON_IsString(m) ? m->valuestring : "",
                             cJSON_IsString(m) ? strlen(m->valuestring) : 0, where, err)) != RC_OK)
            goto out;
    }
    rc = RC_CONFIG;
    if (!ks->key[0]) {
        snprintf(err, ERR_LEN,
                 "%s: the keyset document's \"current\" (\"%s\") names no key of "
                 "\"keys\"",
                 name, cur_id);
        goto out;
    }
    rc = RC_OK;
out:
    if (doc) {
        keyset_doc_wipe(doc);
        cJSON_Delete(doc);
    }
    return rc;
}

/* See keyset.h.  The source is a document when it starts with '{' (no key
 * in hex does), else the current key in hex under MASKING_KEY_ID. */
struct keyset *keyset_load(const char *source_name, const char *source, size_t source_len,
                           const char *key_id_setting, const char *retired, char err[ERR_LEN])
{
    struct keyset *ks = calloc(1, sizeof *ks);
    const char *id = mask_key_id_setting(key_id_setting);
    rc_t rc = RC_CONFIG;

    if (!ks) {
        snprintf(err, ERR_LEN, "out of memory");
        goto out;
    }
    ks->n = 1;
    if (source_len > 0 && source[0] == '{') {
        rc = keyset_add_document(ks, source_name, source, source_len, err);
    } else if (!mask_key_id_valid(id)) {
        /* Not quoted: a key pasted into the wrong variable would end up in the logs. */
        snprintf(err, ERR_LEN, "MASKING_KEY_ID must be 1 to %d characters of [A-Za-z0-9]",
                 MASK_KEY_ID_MAX);
        rc = RC_CONFIG;
    } else {
        rc = keyset_add(ks, KEYSET_ROLE_CURRENT, id, strlen(id), source, source_len, source_name,
                        err);
    }
    if (rc == RC_OK && retired && *retired)
        rc = keyset_add_list(ks, retired, err);
out:
    if (rc != RC_OK) {
        keyset_free(ks);
        ks = NULL;
    }
    return ks;
}

/* See keyset.h: the list is added to a set whose current slot stays empty. */
rc_t keyset_check_retired(const char *retired, char err[ERR_LEN])
{
    struct keyset *ks = calloc(1, sizeof *ks);
    rc_t rc = RC_NOMEM;

    if (!ks) {
        snprintf(err, ERR_LEN, "out of memory");
        goto out;
    }
    ks->n = 1;
    rc = keyset_add_list(ks, retired, err);
out:
    keyset_free(ks);
    return rc;
}

/* See keyset.h; mask_key_free wipes each key. */
void keyset_free(struct keyset *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++)
        mask_key_free(ks->key[i]);
    OPENSSL_cleanse(ks, sizeof *ks);
    free(ks);
}

/* See keyset.h; cannot fail. */
const struct mask_key *keyset_current(const struct keyset *ks)
{
    return ks->key[0];
}

/* See keyset.h; cannot fail. */
size_t keyset_count(const struct keyset *ks)
{
    return ks->n;
}

/* See keyset.h; cannot fail. */
const struct mask_key *keyset_key(const struct keyset *ks, size_t i)
{
    return ks->key[i];
}

/* Returns 1 when s[0..n) could be the body of a masked value: at least
 * KEYSET_BODY_MIN characters of base64url; cannot fail. */
static int keyset_body_shape(const char *s, size_t n)
{
    if (n < KEYSET_BODY_MIN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* See keyset.h.  The shape is checked before the id is looked up, so that
 * text that merely starts like an id ("2001:db8::1") is not taken for a
 * value under an unknown key. */
enum keyset_class keyset_classify(const struct keyset *ks, const char *masked, size_t n,
                                  const struct mask_key **key)
{
    size_t head = n < MASK_KEY_ID_MAX + 1 ? n : MASK_KEY_ID_MAX + 1;
    const char *colon = head ? memchr(masked, ':', head) : NULL;
    size_t id_len = colon ? (size_t)(colon - masked) : 0;
    int slot;

    *key = NULL;
    if (!colon || !mask_key_id_valid_len(masked, id_len) ||
        !keyset_body_shape(colon + 1, n - id_len - 1))
        return KEYSET_NOT_MASKED;
    slot = keyset_slot(ks, masked, id_len);
    if (slot < 0)
        return KEYSET_UNKNOWN_ID;
    *key = ks->key[slot];
    return slot == 0 ? KEYSET_CURRENT : KEYSET_RETIRED;
}

/* See keyset.h.  A value that is not masked at all goes to the current key,
 * whose mask_unmask says what is wrong with it. */
rc_t keyset_unmask(const struct keyset *ks, const char *masked, size_t n, char *out, size_t cap,
                   size_t *out_len, char err[ERR_LEN])
{
    const struct mask_key *k;
    enum keyset_class c = keyset_classify(ks, masked, n, &k);

    if (c == KEYSET_UNKNOWN_ID) {
        /* classify found the colon among the first bytes, after a valid id */
        const char *colon = memchr(masked, ':', n);
        snprintf(err, ERR_LEN,
                 "the value was masked with key id \"%.*s\", which is not in the keyset "
                 "(current \"%s\", %zu retired)",
                 (int)(colon - masked), masked, mask_key_id(ks->key[0]), ks->n - 1);
        return RC_INVALID;
    }
    return mask_unmask(k ? k : ks->key[0], masked, n, out, cap, out_len, err);
}

/* See keyset.h: the key is chosen by the id the value starts with. */
rc_t keyset_unmask_long(const struct keyset *ks, const char *masked, size_t n, struct buf *out,
                        char err[ERR_LEN])
{
    size_t head = n < MASK_KEY_ID_MAX + 1 ? n : MASK_KEY_ID_MAX + 1;
    const char *colon = head ? memchr(masked, ':', head) : NULL;
    int slot = colon ? keyset_slot(ks, masked, (size_t)(colon - masked)) : -1;

    if (slot < 0) {
        snprintf(err, ERR_LEN, "the value is not masked under a key of the set");
        return RC_INVALID;
    }
    return mask_unmask_long(ks->key[slot], masked, n, out, err);
}

/* See keyset.h.  The recovered value lives in a heap copy, wiped. */
rc_t keyset_remask_long(const struct keyset *ks, const char *masked, size_t n, struct buf *out,
                        char err[ERR_LEN])
{
    const struct mask_key *k;
    struct buf plain;
    rc_t rc = RC_INVALID;

    if (keyset_classify(ks, masked, n, &k) != KEYSET_RETIRED) {
        snprintf(err, ERR_LEN, "the value is not masked under a retired key of the set");
        return rc;
    }
    buf_init(&plain, n);
    if ((rc = mask_unmask_long(k, masked, n, &plain, err)) == RC_OK &&
        (rc = mask_value_long(ks->key[0], plain.data ? plain.data : "", plain.len, out)) != RC_OK)
        snprintf(err, ERR_LEN, "cannot mask: %s", rc_strerror(rc));
    buf_wipe(&plain);
    return rc;
}

/* See keyset.h. */
rc_t keyset_remask(const struct keyset *ks, const char *masked, size_t n, char *out,
                   size_t *out_len, char err[ERR_LEN])
{
    char plain[MASK_INPUT_MAX + 1];
    size_t len = 0;
    const struct mask_key *k;
    rc_t rc = RC_INVALID;

    if (keyset_classify(ks, masked, n, &k) != KEYSET_RETIRED) {
        snprintf(err, ERR_LEN, "the value is not masked under a retired key of the set");
        goto out;
    }
    if ((rc = mask_unmask(k, masked, n, plain, sizeof plain, &len, err)) != RC_OK)
        goto out;
    if ((rc = mask_value(ks->key[0], plain, len, out, out_len)) != RC_OK)
        snprintf(err, ERR_LEN, "cannot mask: %s", rc_strerror(rc));
out:
    OPENSSL_cleanse(plain, sizeof plain);
    return rc;
}
