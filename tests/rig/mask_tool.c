/* mask_tool.c - a test rig around mask.c and mask_cli.c, driven by
 * tests/integration/test_mask_crosscheck.py.
 *
 *   mask_tool            reads requests on stdin, one a line, answers one a line:
 *       m HEXKEY KEYID HEXVALUE   ->  OK KEYID:...        (mask the bytes of HEXVALUE)
 *       u HEXKEY KEYID MASKED     ->  OK HEXVALUE         (unmask)
 *     or ERR RC_NAME: message.  HEXVALUE may be empty.  The key is created
 *     once and reused while HEXKEY and KEYID stay the same, as the ETL does.
 *   mask_tool cli ARGS   runs mask_cli() with argv {"cli", ARGS...}, i.e.
 *                        `mask_tool cli mask VALUE` is `bootstrap mask VALUE`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask.h"
#include "mask_cli.h"

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

/* Handles one request line; prints one answer line.  *key / key_hex / key_id
 * cache the last key.  Returns 0, or 1 when the request itself is malformed. */
static int handle(const char *line, size_t n, struct mask_key **key, char *key_hex, char *key_id)
{
    const char *op, *hex, *id;
    size_t op_len = next_field(&line, &n, &op);
    size_t hex_len = next_field(&line, &n, &hex);
    size_t id_len = next_field(&line, &n, &id);
    char err[ERR_LEN] = "";
    char value[2 * MASK_OUTPUT_MAX], out[MASK_OUTPUT_MAX];
    size_t out_len = 0;
    rc_t rc;

    if (op_len != 1 || hex_len > 2 * MASK_KEY_BYTES + 64 || id_len > 64)
        return 1;
    if (!*key || strlen(key_hex) != hex_len || memcmp(key_hex, hex, hex_len) != 0 ||
        strlen(key_id) != id_len || memcmp(key_id, id, id_len) != 0) {
        mask_key_free(*key);
        memcpy(key_hex, hex, hex_len);
        key_hex[hex_len] = '\0';
        memcpy(key_id, id, id_len);
        key_id[id_len] = '\0';
        *key = mask_key_new(key_hex, hex_len, key_id, err);
    }
    if (!*key) {
        printf("ERR RC_CONFIG: %s\n", err);
        key_hex[0] = '\0';
        return 0;
    }
    if (op[0] == 'm') {
        if (n > sizeof value * 2 || unhex(line, n, value) != 0)
            return 1;
        rc = mask_value(*key, value, n / 2, out, &out_len);
        if (rc)
            printf("ERR %s: mask_value\n", rc_name(rc));
        else
            printf("OK %s\n", out);
    } else if (op[0] == 'u') {
        rc = mask_unmask(*key, line, n, out, sizeof out, &out_len, err);
        if (rc) {
            printf("ERR %s: %s\n", rc_name(rc), err);
        } else {
            printf("OK ");
            for (size_t i = 0; i < out_len; i++)
                printf("%02x", (unsigned char)out[i]);
            printf("\n");
        }
    } else {
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct mask_key *key = NULL;
    char key_hex[2 * MASK_KEY_BYTES + 64 + 1] = "", key_id[64 + 1] = "";
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int status = 0;

    if (argc >= 2 && strcmp(argv[1], "cli") == 0)
        return mask_cli(argc - 1, argv + 1);
    if (argc != 1) {
        fprintf(stderr, "usage: mask_tool < requests | mask_tool cli mask|unmask ...\n");
        return 2;
    }
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t n = (size_t)got;
        if (n && line[n - 1] == '\n')
            n--;
        if (handle(line, n, &key, key_hex, key_id) != 0) {
            printf("BAD REQUEST\n");
            status = 1;
        }
    }
    free(line);
    mask_key_free(key);
    return status;
}
