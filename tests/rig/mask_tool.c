/* mask_tool.c - a test rig around mask.c and mask_cli.c, driven by
 * tests/integration/test_mask_crosscheck.py.
 *
 *   mask_tool            reads requests on stdin, one a line, answers one a line:
 *       m HEXKEY KEYID HEXVALUE   ->  OK KEYID:...        (mask the bytes of HEXVALUE)
 *       u HEXKEY KEYID MASKED     ->  OK HEXVALUE         (unmask)
 *       s HEXKEY ADS HEXPLAIN     ->  OK HEX(IV || ciphertext)  (siv_ecb_encrypt)
 *       o HEXKEY ADS HEXSEALED    ->  OK HEXPLAIN               (siv_ecb_decrypt)
 *     or ERR RC_NAME: message.  HEXVALUE and HEXPLAIN may be empty.  For s and
 *     o, HEXKEY is 32, 48 or 64 bytes and ADS the associated data: "-" for
 *     none, else the components in hex separated by commas (so "" is one
 *     empty component and "61,,62" three).  A key is created once and reused
 *     while HEXKEY (and KEYID) stay the same, as the ETL does.
 *   mask_tool cli ARGS   runs mask_cli() with argv {"cli", ARGS...}, i.e.
 *                        `mask_tool cli mask VALUE` is `bootstrap mask VALUE`.
 *   mask_tool etl        the function's own path: the settings through
 *                        config_load (MASKING_KEY, MASKING_KEY_ID,
 *                        MASKING_KEYS_RETIRED from the environment, made a
 *                        keyset; a database user must be named), then
 *                        each stdin line, a message body, through login_parse
 *                        and row_build; answers "OK MASKED_IP" (or "OK -" when
 *                        the row has no ip) or "REJECTED reason", one a line.
 *                        A settings error: "CONFIG message" and exit 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "keyset.h"
#include "login.h"
#include "mask.h"
#include "mask_cli.h"
#include "row.h"
#include "siv.h"

#define AD_MAX 16 /* associated-data components an s or o request may carry */

/* The keys of the last requests, kept while the next ones use the same. */
struct cache {
    struct mask_key *key; /* for m and u */
    char key_hex[2 * MASK_KEY_BYTES + 64 + 1];
    char key_id[64 + 1];
    struct siv_ecb_key *siv; /* for s and o */
    char siv_hex[2 * 64 + 1];
};

/* Returns the enum name of a result code, for the Python side to match on. */
static const char *rc_name(rc_t rc)
{
    static const char *const names[RC__COUNT] = {
        [RC_OK] = "RC_OK",
        [RC_NOMEM] = "RC_NOMEM",
        [RC_TOOBIG] = "RC_TOOBIG",
        [RC_INVALID] = "RC_INVALID",
        [RC_CONFIG] = "RC_CONFIG",
        [RC_IO] = "RC_IO",
        [RC_PROTOCOL] = "RC_PROTOCOL",
        [RC_CRYPTO] = "RC_CRYPTO",
        [RC_DB] = "RC_DB",
        [RC_TIMEOUT] = "RC_TIMEOUT",
    };
    return (unsigned)rc < RC__COUNT ? names[rc] : "RC_UNKNOWN";
}

/* Decodes hex s[0..n) into out (n / 2 bytes).  Returns 0, or -1 on bad hex. */
static int unhex(const char *s, size_t n, char *out)
{
    if (n % 2)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int v = 0;
        for (size_t j = 0; j < 2; j++) {
            char c = s[i + j];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0)
                return -1;
            v = v * 16 + d;
        }
        out[i / 2] = (char)v;
    }
    return 0;
}

/* Splits off the next space-terminated field of *s (length *n); returns its
 * length and advances past the space, or returns (size_t)-1 when no space
 * is left. */
static size_t next_field(const char **s, size_t *n, const char **field)
{
    const char *sp = memchr(*s, ' ', *n);
    size_t len;
    if (!sp)
        return (size_t)-1;
    len = (size_t)(sp - *s);
    *field = *s;
    *s = sp + 1;
    *n -= len + 1;
    return len;
}

/* Prints "OK " and the hex of p[0..n), one line. */
static void print_hex(const unsigned char *p, size_t n)
{
    printf("OK ");
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("\n");
}

/* Handles an s or o request, whose fields after the op are line[0..n) (the
 * key, the associated data, the data).  Returns 0, or 1 when the request is
 * malformed. */
static int handle_siv(char op, const char *line, size_t n, struct cache *c)
{
    const char *hex, *ads;
    size_t hex_len = next_field(&line, &n, &hex);
    size_t ads_len = next_field(&line, &n, &ads);
    unsigned char key[64];
    struct siv_ad ad[AD_MAX];
    size_t n_ad = 0;
    char err[ERR_LEN] = "";
    char *adbuf = NULL, *in = NULL;
    unsigned char *out = NULL;
    int bad = 1;
    rc_t rc;

    if (hex_len == (size_t)-1 || ads_len == (size_t)-1 || hex_len > 2 * sizeof key)
        goto out;
    adbuf = malloc(ads_len / 2 + 1);
    in = malloc(n / 2 + 1);
    out = malloc(n / 2 + SIV_IV_BYTES);
    if (!adbuf || !in || !out || n % 2 || unhex(line, n, in) != 0)
        goto out;
    if (!(ads_len == 1 && ads[0] == '-')) { /* comma-separated hex components */
        size_t start = 0, used = 0;
        for (size_t i = 0; i <= ads_len; i++) {
            if (i < ads_len && ads[i] != ',')
                continue;
            if (n_ad == AD_MAX || unhex(ads + start, i - start, adbuf + used) != 0)
                goto out;
            ad[n_ad].p = (const unsigned char *)adbuf + used;
            ad[n_ad].n = (i - start) / 2;
            used += ad[n_ad++].n;
            start = i + 1;
        }
    }
    if (!c->siv || strlen(c->siv_hex) != hex_len || memcmp(c->siv_hex, hex, hex_len) != 0) {
        siv_ecb_key_free(c->siv);
        c->siv = NULL;
        c->siv_hex[0] = '\0';
        if (hex_len % 2 || unhex(hex, hex_len, (char *)key) != 0)
            goto out;
        c->siv = siv_ecb_key_new(key, hex_len / 2, err);
        if (!c->siv) {
            printf("ERR RC_CONFIG: %s\n", err);
            bad = 0;
            goto out;
        }
        memcpy(c->siv_hex, hex, hex_len);
        c->siv_hex[hex_len] = '\0';
    }
    if (op == 's')
        rc = siv_ecb_encrypt(c->siv, ad, n_ad, (const unsigned char *)in, n / 2, out);
    else
        rc = siv_ecb_decrypt(c->siv, ad, n_ad, (const unsigned char *)in, n / 2, out);
    if (rc)
        printf("ERR %s: siv_ecb_%s\n", rc_name(rc), op == 's' ? "encrypt" : "decrypt");
    else
        print_hex(out, op == 's' ? n / 2 + SIV_IV_BYTES : n / 2 - SIV_IV_BYTES);
    bad = 0;
out:
    free(adbuf);
    free(in);
    free(out);
    return bad;
}

/* Handles one request line; prints one answer line.  c caches the last keys.
 * Returns 0, or 1 when the request itself is malformed. */
static int handle(const char *line, size_t n, struct cache *c)
{
    const char *op, *hex, *id;
    size_t op_len = next_field(&line, &n, &op);
    if (op_len == 1 && (op[0] == 's' || op[0] == 'o'))
        return handle_siv(op[0], line, n, c);
    size_t hex_len = next_field(&line, &n, &hex);
    size_t id_len = next_field(&line, &n, &id);
    char err[ERR_LEN] = "";
    char value[2 * MASK_OUTPUT_MAX], out[MASK_OUTPUT_MAX];
    size_t out_len = 0;
    rc_t rc;

    if (op_len != 1 || hex_len > 2 * MASK_KEY_BYTES + 64 || id_len > 64)
        return 1;
    if (!c->key || strlen(c->key_hex) != hex_len || memcmp(c->key_hex, hex, hex_len) != 0 ||
        strlen(c->key_id) != id_len || memcmp(c->key_id, id, id_len) != 0) {
        mask_key_free(c->key);
        memcpy(c->key_hex, hex, hex_len);
        c->key_hex[hex_len] = '\0';
        memcpy(c->key_id, id, id_len);
        c->key_id[id_len] = '\0';
        c->key = mask_key_new(c->key_hex, hex_len, c->key_id, err);
    }
    if (!c->key) {
        printf("ERR RC_CONFIG: %s\n", err);
        c->key_hex[0] = '\0';
        return 0;
    }
    if (op[0] == 'm') {
        if (n > sizeof value * 2 || unhex(line, n, value) != 0)
            return 1;
        rc = mask_value(c->key, value, n / 2, out, &out_len);
        if (rc)
            printf("ERR %s: mask_value\n", rc_name(rc));
        else
            printf("OK %s\n", out);
    } else if (op[0] == 'u') {
        rc = mask_unmask(c->key, line, n, out, sizeof out, &out_len, err);
        if (rc)
            printf("ERR %s: %s\n", rc_name(rc), err);
        else
            print_hex((const unsigned char *)out, out_len);
    } else {
        return 1;
    }
    return 0;
}

/* The `etl` mode (see the top): returns 0, 1 when a body could not be
 * handled at all, 2 for a settings error. */
static int etl_mode(void)
{
    struct config cfg;
    struct login_parser lp;
    struct keyset *keys = NULL;
    char err[ERR_LEN], ip[MASK_OUTPUT_MAX], dev[MASK_OUTPUT_MAX];
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int status = 2;

    login_parser_init(&lp);
    if (config_load(&cfg, err) != RC_OK) {
        printf("CONFIG %s\n", err);
        goto out;
    }
    if (!cfg.masking_key)
        snprintf(err, ERR_LEN, "the etl mode needs MASKING_KEY");
    else
        keys = keyset_load("MASKING_KEY", cfg.masking_key, strlen(cfg.masking_key),
                           cfg.masking_key_id_env, cfg.masking_keys_retired, err);
    config_free(&cfg);
    if (!keys) {
        printf("CONFIG %s\n", err);
        goto out;
    }
    status = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t n = (size_t)got;
        struct login_row lr;
        struct pg_row row;
        if (n && line[n - 1] == '\n')
            n--;
        enum login_reason why;
        rc_t rc = login_parse(&lp, line, n, 0, -1, 0, 0, &lr, &why);
        if (rc == RC_OK && why == LOGIN_OK)
            rc = row_build(keyset_current(keys), &lr, &row, ip, dev, &why);
        if (rc != RC_OK)
            status = 1;
        else if (why == LOGIN_OK)
            printf("OK %.*s\n", row.masked_ip ? (int)row.masked_ip_len : 1,
                   row.masked_ip ? row.masked_ip : "-");
        else
            printf("REJECTED %s\n", login_reason_code(why));
    }
out:
    free(line);
    login_parser_free(&lp);
    keyset_free(keys);
    return status;
}

int main(int argc, char **argv)
{
    struct cache c = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int status = 0;

    if (argc >= 2 && strcmp(argv[1], "cli") == 0)
        return mask_cli(argc - 1, argv + 1);
    if (argc == 2 && strcmp(argv[1], "etl") == 0)
        return etl_mode();
    if (argc != 1) {
        fprintf(stderr, "usage: mask_tool < requests | mask_tool cli mask|unmask ... | "
                        "mask_tool etl < bodies\n");
        return 2;
    }
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t n = (size_t)got;
        if (n && line[n - 1] == '\n')
            n--;
        if (handle(line, n, &c) != 0) {
            printf("BAD REQUEST\n");
            status = 1;
        }
    }
    free(line);
    mask_key_free(c.key);
    siv_ecb_key_free(c.siv);
    return status;
}
