/* login.c - docs/behaviour.md, "Field rules": one message body to one user_logins row, or
 * the reason it is rejected.
 *
 * The rules are applied in this fixed order; the first that fails gives the
 * reason, so every body has exactly one, reproducible reason:
 *   1. body_missing          no body string in the SQS record
 *   2. body_nul_character    U+0000 in the body string (flag from the event,
 *                            or a raw 0x00 byte in the body)
 *   3. body_invalid_utf8     the body string had invalid UTF-8 or an escaped
 *                            lone surrogate (flag from the event)
 *   4. body_not_json         the body is not one RFC 8259 JSON text
 *   5. body_nul_character    a string inside the body holds "\u0000"
 *   6. body_invalid_utf8     a string inside the body holds invalid UTF-8 or
 *                            an escaped lone surrogate
 *   7. body_not_object       valid JSON, but the root is not an object
 *   8. user_id_missing, user_id_not_string, user_id_length
 *   9. device_type_not_string, device_type_length
 *  10. locale_not_string, locale_length
 *  11. ip_not_string, ip_invalid
 *  12. device_id_not_string, device_id_length
 *  13. app_version_type, app_version_format, app_version_range
 *  14. sent_timestamp_invalid
 * (fields in the order of the table in docs/behaviour.md; create_date last, as it comes
 * from the SQS record rather than the body).
 *
 * Decisions where docs/behaviour.md is silent:
 *   - Keys are compared after decoding escapes ("user\u005fid" is user_id);
 *     with duplicate keys the last one wins, as json_get documents.
 *   - A known key whose value is an object or array is "*_not_string" (or
 *     app_version_type); JSON null is the same as absent, except for user_id
 *     where both are user_id_missing.
 *   - device_type and locale may be the empty string (stored as '', not
 *     NULL); user_id and device_id may not (the *_length reason).
 *   - app_version strings: each part is 1+ ASCII digits, leading zeros read
 *     as plain decimal ("2.03" == "2.3" == 2003000, "0.96" == 96000), as in
 *     PEP 440's normalisation; no spaces, signs, empty parts or suffixes
 *     (app_version_format).  JSON numbers: only a plain non-negative integer
 *     literal N counts (N.0.0); a fraction or exponent (2.5, 2.0, 1e3) is
 *     app_version_format, a minus sign (-1, even -0) app_version_range.  Any
 *     part too large, m or p > 999, or a total over 2147483647 is
 *     app_version_range.  true/false/objects/arrays are app_version_type.
 *   - ip: inet_pton(AF_INET) first, then AF_INET6, on an exact copy of the
 *     decoded value (at most 45 bytes): no spaces, no zone ids ("%eth0"),
 *     no leading-zero octets (glibc refuses them).  "::ffff:1.2.3.4" is an
 *     IPv6 address and keeps inet_ntop's IPv6 text; it is not folded into
 *     "1.2.3.4". */
#include "login.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define USER_ID_MAX 128
#define DEVICE_ID_MAX 128
#define SHORT_TEXT_MAX 32 /* device_type, locale */
#define MS_PER_DAY INT64_C(86400000)

/* See login.h: a static string; "internal_error" for a value out of range
 * (LOGIN__COUNT included).  Cannot fail. */
const char *login_reason_code(enum login_reason r)
{
    static const char *const codes[LOGIN__COUNT] = {
        [LOGIN_OK] = "ok",
        [LOGIN_BODY_MISSING] = "body_missing",
        [LOGIN_BODY_BAD_UTF8] = "body_invalid_utf8",
        [LOGIN_BODY_NUL] = "body_nul_character",
        [LOGIN_BODY_NOT_JSON] = "body_not_json",
        [LOGIN_BODY_NOT_OBJECT] = "body_not_object",
        [LOGIN_USER_ID_MISSING] = "user_id_missing",
        [LOGIN_USER_ID_TYPE] = "user_id_not_string",
        [LOGIN_USER_ID_LENGTH] = "user_id_length",
        [LOGIN_DEVICE_TYPE_TYPE] = "device_type_not_string",
        [LOGIN_DEVICE_TYPE_LENGTH] = "device_type_length",
        [LOGIN_LOCALE_TYPE] = "locale_not_string",
        [LOGIN_LOCALE_LENGTH] = "locale_length",
        [LOGIN_IP_TYPE] = "ip_not_string",
        [LOGIN_IP_INVALID] = "ip_invalid",
        [LOGIN_DEVICE_ID_TYPE] = "device_id_not_string",
        [LOGIN_DEVICE_ID_LENGTH] = "device_id_length",
        [LOGIN_APP_VERSION_TYPE] = "app_version_type",
        [LOGIN_APP_VERSION_FORMAT] = "app_version_format",
        [LOGIN_APP_VERSION_RANGE] = "app_version_range",
        [LOGIN_SENT_TIMESTAMP] = "sent_timestamp_invalid",
        [LOGIN_MASKED_TOO_LONG] = "masked_value_too_long",
    };
    if ((unsigned)r >= LOGIN__COUNT)
        return "internal_error";
    return codes[r];
}

/* The body keys the rules look at, in rule order. */
enum { F_USER_ID, F_DEVICE_TYPE, F_LOCALE, F_IP, F_DEVICE_ID, F_APP_VERSION, F__COUNT };

static const struct json_name field_names[F__COUNT] = {
    [F_USER_ID] = {"user_id", 7},     [F_DEVICE_TYPE] = {"device_type", 11},
    [F_LOCALE] = {"locale", 6},       [F_IP] = {"ip", 2},
    [F_DEVICE_ID] = {"device_id", 9}, [F_APP_VERSION] = {"app_version", 11},
};

_Static_assert(F__COUNT == LOGIN_FIELDS && F__COUNT <= DRIFT_FIELDS_MAX, "the body keys");

/* See login.h. */
const char *login_field_name(size_t f)
{
    return f < F__COUNT ? field_names[f].s : "";
}

/* See login.h: allocates nothing until the first body; cannot fail. */
void login_parser_init(struct login_parser *p)
{
    json_init(&p->doc);
    buf_init(&p->scratch, SIZE_MAX / 4);
    json_names_init(&p->members, field_names, F__COUNT);
    p->drift = NULL;
}

/* See login.h: frees the tokens and scratch; the parser can be re-initialised. */
void login_parser_free(struct login_parser *p)
{
    json_free(&p->doc);
    buf_free(&p->scratch);
}

/* Counts the characters (code points) of n bytes of valid UTF-8, as
 * PostgreSQL counts them for varchar(n): every byte that is not a
 * continuation byte (10xxxxxx) starts one.  Eight bytes at a time; a word
 * of ASCII costs one test.  Cannot fail. */
static size_t utf8_chars(const char *s, size_t n)
{
    const uint64_t high = UINT64_C(0x8080808080808080);
    size_t c = n, i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (!(w & high))
            continue;
        for (int k = 0; k < 8; k++)
            c -= ((unsigned char)s[i + k] & 0xC0) == 0x80;
    }
    for (; i < n; i++)
        c -= ((unsigned char)s[i] & 0xC0) == 0x80;
    return c;
}

/* Result of reading a text field. */
enum text_rc { TEXT_OK, TEXT_NULL, TEXT_TYPE, TEXT_LENGTH };

/* Reads member value `i` (-1: absent) as text of min..max characters.
 * Returns TEXT_NULL for absent or null (*s = NULL), TEXT_TYPE for any
 * other non-string, TEXT_LENGTH when out of bounds, TEXT_OK with the decoded
 * view in *s and *n.  Scratch was reserved by the caller, so it cannot fail. */
static enum text_rc get_text(struct login_parser *p, long i, size_t min, size_t max, const char **s,
                             size_t *n)
{
    *s = NULL;
    *n = 0;
    if (i < 0 || p->doc.tok[i].type == JSON_NULL)
        return TEXT_NULL;
    if (p->doc.tok[i].type != JSON_STRING)
        return TEXT_TYPE;
    if (json_string(&p->doc, (uint32_t)i, &p->scratch, s, n) != RC_OK) {
        *s = NULL; /* not reached: scratch is reserved */
        return TEXT_TYPE;
    }
    size_t c = utf8_chars(*s, *n);
    if (c < min || c > max)
        return TEXT_LENGTH;
    return TEXT_OK;
}

/* Reads up to three dot-separated parts of ASCII digits from s[0..n) into
 * v[] (saturating far above any allowed value).  Returns the number of
 * parts (1 to 3), or 0 when the text is not M, M.m or M.m.p.  Cannot fail. */
static int version_parts(const char *s, size_t n, int64_t v[3])
{
    size_t k = 0;
    int parts = 0;

    for (;;) {
        size_t start = k;
        int64_t x = 0;
        if (parts == 3)
            return 0; /* a fourth part */
        while (k < n && s[k] >= '0' && s[k] <= '9') {
            if (x < INT64_C(10000000000))
                x = x * 10 + (s[k] - '0');
            k++;
        }
        if (k == start)
            return 0; /* empty part, or not a digit */
        v[parts++] = x;
        if (k == n)
            return parts;
        if (s[k] != '.')
            return 0;
        k++;
    }
}

/* Applies the app_version rule to member value `i` (-1: absent), filling
 * row->has_app_version and row->app_version.  Returns LOGIN_OK or one of the
 * three app_version reasons.  Cannot fail otherwise. */
static enum login_reason app_version(struct login_parser *p, long i, struct login_row *row)
{
    const struct json_tok *t;
    const char *s;
    size_t n;
    int64_t v[3] = {0, 0, 0};

    if (i < 0 || p->doc.tok[i].type == JSON_NULL)
        return LOGIN_OK;
    t = &p->doc.tok[i];
    if (t->type == JSON_NUMBER) {
        s = p->doc.text + t->start;
        n = t->end - t->start;
        if (memchr(s, '.', n) || memchr(s, 'e', n) || memchr(s, 'E', n))
            return LOGIN_APP_VERSION_FORMAT;
        if (s[0] == '-')
            return LOGIN_APP_VERSION_RANGE;
        if (version_parts(s, n, v) != 1) /* cannot fail: the tokenizer checked it */
            return LOGIN_APP_VERSION_FORMAT;
    } else if (t->type == JSON_STRING) {
        if (json_string(&p->doc, (uint32_t)i, &p->scratch, &s, &n) != RC_OK)
            return LOGIN_APP_VERSION_TYPE; /* not reached: scratch is reserved */
        if (version_parts(s, n, v) == 0)
            return LOGIN_APP_VERSION_FORMAT;
    } else {
        return LOGIN_APP_VERSION_TYPE;
    }
    if (v[1] > 999 || v[2] > 999)
        return LOGIN_APP_VERSION_RANGE;
    int64_t total = v[0] * 1000000 + v[1] * 1000 + v[2]; /* v[0] < 1e11: no overflow */
    if (total > INT32_MAX)
        return LOGIN_APP_VERSION_RANGE;
    row->has_app_version = 1;
    row->app_version = (int32_t)total;
    return LOGIN_OK;
}

/* Writes the dotted-decimal text of an IPv4 address, exactly as inet_ntop
 * prints it (no leading zeros), into out (16 bytes).  glibc's inet_ntop goes
 * through sprintf and costs a third of a record's validation; IPv6 keeps
 * using it.  Returns the text's length; cannot fail. */
static size_t ipv4_text(const unsigned char a[4], char out[16])
{
    char *o = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (v >= 100)
            *o++ = (char)('0' + v / 100);
        if (v >= 10)
            *o++ = (char)('0' + v / 10 % 10);
        *o++ = (char)('0' + v % 10);
        *o++ = i < 3 ? '.' : '\0';
    }
    return (size_t)(o - out - 1);
}

/* The ip rule's canonical form (see login_ip_canonical in login.h).  The text is copied into a
 * bounded, NUL-terminated local buffer, since inet_pton wants a C string.  A NUL inside the text
 * would cut it short there, so such text is no address; glibc's inet_pton takes only the canonical
 * dotted quad, so for IPv4 (most records) an output as long as the input proves there was none
 * without looking for it. */
static inline int ip_canonical(const char *s, size_t n, char out[LOGIN_IP_TEXT_MAX])
{
    char tmp[LOGIN_IP_TEXT_MAX];
    unsigned char addr[16];

    if (n == 0 || n >= sizeof tmp) /* the longest IPv6 text is 45 bytes */
        return 0;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET, tmp, addr) == 1)
        return ipv4_text(addr, out) == n || !memchr(s, '\0', n);
    if (memchr(s, '\0', n) || inet_pton(AF_INET6, tmp, addr) != 1)
        return 0;
    return inet_ntop(AF_INET6, addr, out, LOGIN_IP_TEXT_MAX) != NULL; /* 46 bytes hold any */
}

/* See login.h: ip_canonical, for the callers outside (bootstrap mask); the
 * ip rule calls ip_canonical itself, inline. */
int login_ip_canonical(const char *s, size_t n, char out[LOGIN_IP_TEXT_MAX])
{
    return ip_canonical(s, n, out);
}

/* Applies the ip rule to member value `i` (-1: absent), filling row->ip and
 * row->has_ip with the canonical text.  Returns LOGIN_OK, LOGIN_IP_TYPE or
 * LOGIN_IP_INVALID. */
static enum login_reason ip_rule(struct login_parser *p, long i, struct login_row *row)
{
    const char *s;
    size_t n;

    switch (get_text(p, i, 0, SIZE_MAX, &s, &n)) {
    case TEXT_NULL:
        return LOGIN_OK;
    case TEXT_TYPE:
        return LOGIN_IP_TYPE;
    default:
        break;
    }
    if (!ip_canonical(s, n, row->ip))
        return LOGIN_IP_INVALID;
    row->has_ip = 1;
    return LOGIN_OK;
}

/* Returns floor(ms / 86400000), the days since 1970-01-01 UTC; cannot fail. */
static int32_t days_since_epoch(int64_t ms)
{
    int64_t d = ms / MS_PER_DAY;
    if (ms % MS_PER_DAY < 0)
        d--;
    return (int32_t)d;
}

/* Applies rules 4 to 7 of the list at the top (the body has passed 1-3):
 * tokenizes the body, finds the members the rules read (idx[f]: the value
 * token of field f, or -1) and reserves scratch for decoding them, so that
 * the views the rules hand out never move.  Returns RC_OK with *why
 * (LOGIN_OK or the first failing rule's reason), or RC_NOMEM. */
static rc_t read_body(struct login_parser *p, const char *body, size_t body_len, long *idx,
                      enum login_reason *why)
{
    struct json_doc *doc = &p->doc;
    char err[ERR_LEN];
    size_t need = 0;

    *why = LOGIN_OK;
    switch (json_parse(doc, body, body_len, err)) {
    case RC_OK:
        break;
    case RC_NOMEM:
        return RC_NOMEM;
    default:
        *why = LOGIN_BODY_NOT_JSON;
        return RC_OK;
    }
    if (doc->flags & JSON_HAS_NUL)
        *why = LOGIN_BODY_NUL;
    else if (doc->flags & JSON_BAD_UTF8)
        *why = LOGIN_BODY_BAD_UTF8;
    else if (doc->tok[0].type != JSON_OBJECT)
        *why = LOGIN_BODY_NOT_OBJECT;
    if (*why != LOGIN_OK)
        return RC_OK;

    /* One pass over the members; a later duplicate overwrites an earlier one. */
    json_members(doc, 0, &p->members, idx);
    if (p->drift)
        drift_note(p->drift, doc, idx, &p->members);
    for (int f = 0; f < F__COUNT; f++)
        if (idx[f] >= 0 && doc->tok[idx[f]].flags & JSON_ESCAPED)
            need += doc->tok[idx[f]].end - doc->tok[idx[f]].start;
    buf_reset(&p->scratch);
    return buf_reserve(&p->scratch, need) == RC_OK ? RC_OK : RC_NOMEM;
}

/* Applies rules 8 to 14 of the list at the top to the members read_body
 * found.  Returns the first failing rule's reason, or LOGIN_OK with row
 * filled; cannot fail otherwise (scratch is reserved). */
static enum login_reason apply_rules(struct login_parser *p, const long *idx, int64_t sent_ms,
                                     int sent_bad, int64_t now_ms, struct login_row *row)
{
    switch (get_text(p, idx[F_USER_ID], 1, USER_ID_MAX, &row->user_id, &row->user_id_len)) {
    case TEXT_NULL:
        return LOGIN_USER_ID_MISSING;
    case TEXT_TYPE:
        return LOGIN_USER_ID_TYPE;
    case TEXT_LENGTH:
        return LOGIN_USER_ID_LENGTH;
    default:
        break;
    }
    switch (get_text(p, idx[F_DEVICE_TYPE], 0, SHORT_TEXT_MAX, &row->device_type,
                     &row->device_type_len)) {
    case TEXT_TYPE:
        return LOGIN_DEVICE_TYPE_TYPE;
    case TEXT_LENGTH:
        return LOGIN_DEVICE_TYPE_LENGTH;
    default:
        break;
    }
    switch (get_text(p, idx[F_LOCALE], 0, SHORT_TEXT_MAX, &row->locale, &row->locale_len)) {
    case TEXT_TYPE:
        return LOGIN_LOCALE_TYPE;
    case TEXT_LENGTH:
        return LOGIN_LOCALE_LENGTH;
    default:
        break;
    }
    enum login_reason r = ip_rule(p, idx[F_IP], row);
    if (r != LOGIN_OK)
        return r;
    switch (get_text(p, idx[F_DEVICE_ID], 1, DEVICE_ID_MAX, &row->device_id, &row->device_id_len)) {
    case TEXT_TYPE:
        return LOGIN_DEVICE_ID_TYPE;
    case TEXT_LENGTH:
        return LOGIN_DEVICE_ID_LENGTH;
    default:
        break;
    }
    if ((r = app_version(p, idx[F_APP_VERSION], row)) != LOGIN_OK)
        return r;
    if (sent_bad)
        return LOGIN_SENT_TIMESTAMP;
    row->create_date = days_since_epoch(sent_ms >= 0 ? sent_ms : now_ms);
    return LOGIN_OK;
}

/* See login.h.  On any rejection or failure the row is left all-zero (every
 * text NULL), so a caller that ignores the reason cannot write half a row. */
rc_t login_parse(struct login_parser *p, const char *body, size_t body_len, unsigned body_flags,
                 int64_t sent_ms, int sent_bad, int64_t now_ms, struct login_row *row,
                 enum login_reason *why)
{
    enum login_reason r = LOGIN_OK; /* a local: *why might alias the row */
    long idx[F__COUNT];
    rc_t rc = RC_OK;

    memset(row, 0, sizeof *row);
    if (!body)
        r = LOGIN_BODY_MISSING;
    else if (body_flags & JSON_HAS_NUL || memchr(body, '\0', body_len))
        r = LOGIN_BODY_NUL;
    else if (body_flags & JSON_BAD_UTF8)
        r = LOGIN_BODY_BAD_UTF8;
    else if ((rc = read_body(p, body, body_len, idx, &r)) == RC_OK && r == LOGIN_OK)
        r = apply_rules(p, idx, sent_ms, sent_bad, now_ms, row);
    if (rc != RC_OK || r != LOGIN_OK)
        memset(row, 0, sizeof *row);
    *why = r;
    return rc;
}
