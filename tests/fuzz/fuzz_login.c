/* fuzz_login.c - libFuzzer target: the input is one message body.
 *
 * Runs login_parse and aborts when a result breaks an invariant that must
 * hold for every input:
 *   - a valid row: user_id of 1-128 characters, device_type/locale of at most
 *     32, device_id of 1-128, all valid UTF-8 without U+0000; ip re-parses to
 *     itself; app_version agrees with an independent reference parser;
 *     create_date is NOW's day; a rejected row is all zero;
 *   - the tokenizer: token offsets, `next` links and member counts agree,
 *     decoded strings never grow, an unflagged string decodes to valid UTF-8
 *     without U+0000, and every text it accepts without flags cJSON accepts
 *     too (cJSON is laxer, so only that direction holds).
 * Seeds: tests/fuzz/corpus/login/. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "json.h"
#include "login.h"

#define NOW 1700000000000LL
#define NOW_DAY 19675

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Returns 1 when s[0..n) is valid UTF-8 without U+0000 (a second, plain
 * implementation: decode each code point and check its range). */
static int utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i], need;
        uint32_t cp, min;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            need = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= need)
            return 0;
        for (unsigned k = 1; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* Counts code points of valid UTF-8. */
static size_t chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Checks a text column: NULL allowed when nullable, else min..max chars. */
static void check_text(const char *s, size_t n, int nullable, size_t min, size_t max)
{
    if (!s) {
        if (!nullable)
            abort();
        return;
    }
    if (!utf8_ok(s, n) || chars(s, n) < min || chars(s, n) > max)
        abort();
}

/* Reference app_version: returns -1 for absent/null, -2 for rejected, else
 * the encoded value.  Written independently of login.c, with strtoul on
 * parts already known to be 1-9 ASCII digits. */
static long long ref_app_version(const struct json_doc *doc, struct buf *scratch)
{
    long i = json_get(doc, 0, "app_version");
    char tmp[64];
    const char *s;
    size_t n;

    if (i < 0 || doc->tok[i].type == JSON_NULL)
        return -1;
    if (doc->tok[i].type == JSON_NUMBER) {
        s = doc->text + doc->tok[i].start;
        n = doc->tok[i].end - doc->tok[i].start;
        if (n > 4 || strspn(s, "0123456789") < n)
            return -2; /* fraction, exponent, sign, or more than 2147 */
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        unsigned long v = strtoul(tmp, NULL, 10);
        return v > 2147 ? -2 : (long long)v * 1000000;
    }
    if (doc->tok[i].type != JSON_STRING || json_string(doc, (uint32_t)i, scratch, &s, &n) != RC_OK)
        return -2;
    if (n == 0)
        return -2;
    char *copy = malloc(n + 1);
    if (!copy)
        abort();
    memcpy(copy, s, n);
    copy[n] = '\0';
    unsigned long part[3] = {0, 0, 0};
    int k = 0;
    char *save = copy, *dot;
    long long v = -2;
    for (;;) {
        dot = strchr(save, '.');
        if (dot)
            *dot = '\0';
        size_t len = strlen(save);
        if (k == 3 || len == 0 || strspn(save, "0123456789") != len)
            goto out;
        while (len > 1 && *save == '0') /* leading zeros are plain decimal */
            save++, len--;
        if (len > 9)
            goto out; /* 10+ significant digits: over any limit */
        part[k++] = strtoul(save, NULL, 10);
        if (!dot)
            break;
        save = dot + 1;
    }
    if (part[1] > 999 || part[2] > 999)
        goto out;
    v = (long long)part[0] * 1000000 + (long long)part[1] * 1000 + (long long)part[2];
    if (v > 2147483647)
        v = -2;
out:
    free(copy);
    return v;
}

/* Checks the token array of a successfully parsed document. */
static void check_doc(const struct json_doc *doc, struct buf *scratch, int *flagged)
{
    *flagged = 0;
    if (doc->ntok == 0 || doc->ntok > doc->len || doc->tok[0].next != doc->ntok)
        abort();
    for (uint32_t i = 0; i < doc->ntok; i++) {
        const struct json_tok *t = &doc->tok[i];
        if (t->start > t->end || t->end > doc->len || t->next <= i || t->next > doc->ntok)
            abort();
        if (t->type == JSON_ARRAY || t->type == JSON_OBJECT) {
            uint32_t c = i + 1, members = 0;
            while (c < t->next) {
                if (t->type == JSON_OBJECT) {
                    if (doc->tok[c].type != JSON_STRING)
                        abort();
                    c++;
                }
                c = doc->tok[c].next;
                members++;
            }
            if (c != t->next || members != t->count)
                abort();
        } else if (t->next != i + 1) {
            abort();
        }
        if (t->type != JSON_STRING) {
            if (t->flags)
                abort();
            continue;
        }
        if (t->flags & (JSON_HAS_NUL | JSON_BAD_UTF8))
            *flagged = 1;
        const char *s;
        size_t n;
        buf_reset(scratch);
        if (json_string(doc, i, scratch, &s, &n) != RC_OK || n > t->end - t->start)
            abort();
        if (!(t->flags & (JSON_HAS_NUL | JSON_BAD_UTF8)) && !utf8_ok(s, n))
            abort();
        if ((t->flags & JSON_HAS_NUL) && !memchr(s, 0, n))
            abort();
        if (!json_streq(doc, i, s, n))
            abort(); /* the streaming compare agrees with the decoder */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct login_parser lp;
    static struct json_doc doc;
    static struct buf scratch;
    static int ready;
    const char *body = (const char *)data;
    struct login_row row;
    char err[ERR_LEN];
    int flagged = 0;

    if (!ready) {
        login_parser_init(&lp);
        json_init(&doc);
        buf_init(&scratch, 1 << 26);
        ready = 1;
    }

    rc_t rc = json_parse(&doc, body, size, err);
    if (rc == RC_OK) {
        check_doc(&doc, &scratch, &flagged);
        if (!flagged) {
            cJSON *c = cJSON_ParseWithLengthOpts(body, size, NULL, 0);
            if (!c)
                abort();
            cJSON_Delete(c);
        }
    } else if (rc != RC_INVALID || doc.ntok != 0) {
        abort();
    }

    /* Schema drift counted on every body: the names it keeps are printable,
     * short and NUL-terminated, whatever the body's member names are. */
    static struct drift drift;
    drift_reset(&drift);
    lp.drift = &drift;
    enum login_reason r;
    if (login_parse(&lp, body, size, 0, -1, 0, NOW, &row, &r) != RC_OK) /* no failing malloc */
        abort();
    if (drift.records > 1 || drift.nnames > DRIFT_NAMES ||
        drift.nnames + drift.other > drift.unknown)
        abort();
    for (size_t k = 0; k < drift.nnames; k++) {
        size_t n = strnlen(drift.names[k], DRIFT_NAME_MAX + 1);
        if (n == 0 || n > DRIFT_NAME_MAX ||
            strspn(drift.names[k], "abcdefghijklmnopqrstuvwxyz"
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != n)
            abort();
    }
    if ((unsigned)r >= LOGIN__COUNT || r == LOGIN_BODY_MISSING || r == LOGIN_SENT_TIMESTAMP ||
        r == LOGIN_MASKED_TOO_LONG)
        abort();
    if (r != LOGIN_OK) {
        static const struct login_row zero;
        if (memcmp(&row, &zero, sizeof row) != 0)
            abort();
        if (r >= LOGIN_USER_ID_MISSING &&
            (rc != RC_OK || flagged || doc.tok[0].type != JSON_OBJECT))
            abort(); /* a field rule fired on a body that is not a clean object */
        if (r >= LOGIN_APP_VERSION_TYPE && r <= LOGIN_APP_VERSION_RANGE) {
            buf_reset(&scratch);
            if (ref_app_version(&doc, &scratch) != -2)
                abort();
        }
        return 0;
    }
    if (rc != RC_OK || flagged || doc.tok[0].type != JSON_OBJECT || memchr(body, 0, size))
        abort();
    check_text(row.user_id, row.user_id_len, 0, 1, 128);
    check_text(row.device_type, row.device_type_len, 1, 0, 32);
    check_text(row.locale, row.locale_len, 1, 0, 32);
    check_text(row.device_id, row.device_id_len, 1, 1, 128);
    if (row.has_ip) {
        unsigned char a[16];
        char again[INET6_ADDRSTRLEN];
        int af = strchr(row.ip, ':') ? AF_INET6 : AF_INET;
        if (memchr(row.ip, 0, sizeof row.ip) == NULL || inet_pton(af, row.ip, a) != 1 ||
            !inet_ntop(af, a, again, sizeof again) || strcmp(again, row.ip) != 0)
            abort();
    } else if (row.ip[0]) {
        abort();
    }
    buf_reset(&scratch);
    long long ref = ref_app_version(&doc, &scratch);
    if (row.has_app_version ? ref != row.app_version || row.app_version < 0 : ref != -1)
        abort();
    if (row.create_date != NOW_DAY)
        abort();
    return 0;
}
