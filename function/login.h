/* login.h - the rules that turn one message body into one user_logins row
 * (docs/behaviour.md, "Field rules"), with a stable reason code for every rejection. */
#ifndef LOGIN_H
#define LOGIN_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "drift.h"
#include "json.h"
#include "result.h"

/* Why a record was rejected.  The codes (login_reason_code) are stable: logs,
 * metrics, tests and docs/design.md use them. */
enum login_reason {
    LOGIN_OK = 0,
    LOGIN_BODY_MISSING,       /* "body_missing": no body string in the SQS record */
    LOGIN_BODY_BAD_UTF8,      /* "body_invalid_utf8" */
    LOGIN_BODY_NUL,           /* "body_nul_character": U+0000 anywhere in the body */
    LOGIN_BODY_NOT_JSON,      /* "body_not_json" */
    LOGIN_BODY_NOT_OBJECT,    /* "body_not_object": valid JSON but not an object */
    LOGIN_USER_ID_MISSING,    /* "user_id_missing": absent or null */
    LOGIN_USER_ID_TYPE,       /* "user_id_not_string" */
    LOGIN_USER_ID_LENGTH,     /* "user_id_length": empty or over 128 characters */
    LOGIN_DEVICE_TYPE_TYPE,   /* "device_type_not_string" */
    LOGIN_DEVICE_TYPE_LENGTH, /* "device_type_length": over 32 characters */
    LOGIN_LOCALE_TYPE,        /* "locale_not_string" */
    LOGIN_LOCALE_LENGTH,      /* "locale_length": over 32 characters */
    LOGIN_IP_TYPE,            /* "ip_not_string" */
    LOGIN_IP_INVALID,         /* "ip_invalid": not an IPv4 or IPv6 textual address */
    LOGIN_DEVICE_ID_TYPE,     /* "device_id_not_string" */
    LOGIN_DEVICE_ID_LENGTH,   /* "device_id_length": empty or over 128 characters */
    LOGIN_APP_VERSION_TYPE,   /* "app_version_type": not a string, an integer or null */
    LOGIN_APP_VERSION_FORMAT, /* "app_version_format": not M, M.m or M.m.p */
    LOGIN_APP_VERSION_RANGE,  /* "app_version_range": m or p over 999, or over int4 */
    LOGIN_SENT_TIMESTAMP,     /* "sent_timestamp_invalid": SentTimestamp present but bad */
    LOGIN_MASKED_TOO_LONG,    /* "masked_value_too_long": a masked value would not fit
                                 varchar(256) (a device_id of many multi-byte characters);
                                 decided by the caller after masking */
    LOGIN__COUNT              /* the number of codes; never a result */
};

/* Room for the canonical text of any IP address, NUL included. */
#define LOGIN_IP_TEXT_MAX 46

/* Returns the stable snake_case code of a reason; cannot fail. */
const char *login_reason_code(enum login_reason r);

/* Text values are (pointer, length) views, not NUL-terminated, borrowed from
 * the body text or the parser's scratch; they stay valid until the next
 * login_parse on the same parser.  A NULL pointer means SQL NULL. */
struct login_row {
    const char *user_id; /* never NULL in a valid row */
    size_t user_id_len;
    const char *device_type;
    size_t device_type_len;
    const char *locale;
    size_t locale_len;
    const char *device_id; /* the raw value: mask it before it leaves the process */
    size_t device_id_len;
    char ip[LOGIN_IP_TEXT_MAX]; /* canonical text (login_ip_canonical), NUL-terminated */
    int has_ip;                 /* 0: ip is SQL NULL */
    int has_app_version;        /* 0: app_version is SQL NULL */
    int32_t app_version;        /* M*1000000 + m*1000 + p */
    int32_t create_date;        /* days since 1970-01-01, UTC */
};

/* The ip rule's canonical form, the one both the ETL (masked_ip) and
 * `bootstrap mask` use: s[0..n) is read as an IPv4 address first, then as an
 * IPv6 address (inet_pton: no spaces, zone ids or leading-zero octets), and
 * written back as inet_ntop prints it (IPv4 dotted decimal; IPv6 lower case,
 * longest zero run as "::", "::ffff:1.2.3.4" kept as IPv6).  Returns 1 with
 * the NUL-terminated text in out, or 0 (out undefined) when s is no address,
 * is empty, over 45 bytes, or holds a NUL.  Cannot fail otherwise. */
int login_ip_canonical(const char *s, size_t n, char out[LOGIN_IP_TEXT_MAX]);

/* Reusable state for parsing many bodies; holds the token array and scratch. */
struct login_parser {
    struct json_doc doc;       /* owned: the last body's tokens, reused */
    struct buf scratch;        /* owned: decoded escaped values of the last body */
    struct json_names members; /* the body keys the rules read, prepared once */
    struct drift *drift;       /* NULL, or each object body's schema drift is added there */
};

#define LOGIN_FIELDS 6 /* the body keys the rules read */

/* The name of body key f (0 to LOGIN_FIELDS - 1), as drift counts them;
 * cannot fail. */
const char *login_field_name(size_t f);

/* Initialises a parser; allocates nothing, cannot fail. */
void login_parser_init(struct login_parser *p);
/* Frees what the parser owns; cannot fail. */
void login_parser_free(struct login_parser *p);

/* Applies every rule to a body.  `body_flags` are the SQS record's flags
 * (JSON_BAD_UTF8, JSON_HAS_NUL of the body string); body NULL means there was
 * no body string.  `sent_ms` is attributes.SentTimestamp (-1: absent, use
 * now_ms), `sent_bad` says it was present but malformed.  Returns RC_OK with
 * *why: LOGIN_OK with `row` filled, or the reason the record is rejected
 * (`row` all zero).  When several rules fail, the first in the fixed order
 * documented at the top of login.c gives the reason (body checks, then
 * user_id, device_type, locale, ip, device_id, app_version, then
 * sent_timestamp_invalid); *why is never LOGIN_MASKED_TOO_LONG (the
 * caller's).  Returns RC_NOMEM (row all zero, *why meaningless) when memory
 * runs out: the batch fails, not the record.  Never crashes on any input. */
rc_t login_parse(struct login_parser *p, const char *body, size_t body_len, unsigned body_flags,
                 int64_t sent_ms, int sent_bad, int64_t now_ms, struct login_row *row,
                 enum login_reason *why);

#endif
