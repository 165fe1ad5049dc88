/* mask_cli.c - `bootstrap mask` / `bootstrap unmask`: the same masking as the
 * ETL, driven from the command line or from standard input. */
#include "mask_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "keyset.h"
#include "login.h"
#include "mask.h"

enum { MASK_CLI_OK = 0, MASK_CLI_VALUE = 1, MASK_CLI_USAGE = 2 };

static const char mask_cli_usage_text[] =
    "usage: bootstrap mask [--raw] [--] VALUE\n"
    "       bootstrap unmask [--] MASKED\n"
    "       (VALUE or MASKED `-`: read values from standard input, one a line)\n"
    "\n"
    "mask    prints the masked value exactly as the ETL stores it in masked_ip and\n"
    "        masked_device_id: KEY_ID:base64url(AES-256-SIV(key, padded value)).\n"
    "        A VALUE that is an IPv4 or IPv6 address is first put in the ETL's\n"
    "        canonical form (inet_pton, then inet_ntop; IPv4 tried first), so\n"
    "        `mask 2001:DB8::1` prints the same as `mask 2001:db8::1`, which is\n"
    "        what masked_ip holds.  --raw masks the bytes as given instead (for a\n"
    "        device_id that happens to look like an IPv6 address).\n"
    "unmask  prints the original value, recovered with the key of the set whose id\n"
    "        the value starts with (the current key or a retired one); fails when\n"
    "        the value was altered, was masked under a key the set does not hold,\n"
    "        or is not a masked value.\n"
    "-       reads standard input, one value a line (a trailing LF or CR LF is\n"
    "        removed), and prints one line per input line; a line that fails\n"
    "        prints an empty line and an error naming its line number on stderr.\n"
    "        Use it to keep values out of the shell history.\n"
    "--      ends the options: `mask -- -` masks the one-character value \"-\".\n"
    "\n"
    "environment:\n"
    "  MASKING_KEY     the current masking key, 128 hexadecimal characters, or a\n"
    "                  keyset document as the masking secret may hold it:\n"
    "                  {\"current\":\"k2\",\"keys\":{\"k1\":\"<hex>\",\"k2\":\"<hex>\"}} "
    "(required)\n"
    "  MASKING_KEY_ID  the id of a key in hex, 1 to 8 characters of [A-Za-z0-9]\n"
    "                  (default k1 when unset; set but empty is an error, as in the\n"
    "                  function); a keyset document names its current key itself\n"
    "  MASKING_KEYS_RETIRED  more retired keys: id=<128 hex>[,id=<128 hex>...]\n"
    "  mask always uses the current key; unmask any key of the set.\n"
    "\n"
    "exit status: 0 done, 1 a value failed, 2 usage or configuration error\n";

/* Prints the usage text to f; cannot fail (a failed write is not reported). */
static void mask_cli_usage(FILE *f)
{
    fputs(mask_cli_usage_text, f);
}

/* Creates the keyset from MASKING_KEY, MASKING_KEY_ID and MASKING_KEYS_RETIRED
 * (keyset.h).  Returns NULL after printing why on stderr (never a character
 * of a key).  The caller frees the set with keyset_free. */
static struct keyset *mask_cli_keys(const char *cmd)
{
    char err[ERR_LEN];
    struct keyset *ks = NULL;
    const char *hex = getenv("MASKING_KEY");

    if (!hex || !*hex) {
        fprintf(stderr,
                "bootstrap %s: MASKING_KEY is not set: it must hold the masking key, 128 "
                "hexadecimal characters, or a keyset document\n",
                cmd);
        goto out;
    }
    ks = keyset_load("MASKING_KEY", hex, strlen(hex), getenv("MASKING_KEY_ID"),
                     getenv("MASKING_KEYS_RETIRED"), err);
    if (!ks)
        fprintf(stderr, "bootstrap %s: %s\n", cmd, err);
out:
    return ks;
}

/* Unmasks a value longer than any masked field (a message body kept in
 * quarantine, login_etl_rejected.body) and prints it and a newline on
 * stdout.  Returns as mask_cli_one; the recovered value is wiped. */
static int mask_cli_unmask_long(const struct keyset *ks, const char *v, size_t n, const char *where)
{
    struct buf out;
    char err[ERR_LEN];
    int status = MASK_CLI_VALUE;

    buf_init(&out, n);
    if (keyset_unmask_long(ks, v, n, &out, err) != RC_OK) {
        fprintf(stderr, "bootstrap unmask: %s%s\n", where, err);
    } else {
        fwrite(out.data, 1, out.len, stdout);
        putchar('\n');
        status = MASK_CLI_OK;
    }
    buf_wipe(&out);
    return status;
}

/* Masks or unmasks one value v[0..n) (v NUL-terminated at n) and prints the
 * result and a newline on stdout.  `where` prefixes an error ("" or
 * "line 3: ").  Returns MASK_CLI_OK, or MASK_CLI_VALUE after printing why on
 * stderr; prints nothing on stdout then.  The recovered value is wiped. */
static int mask_cli_one(const struct keyset *ks, int unmask, int raw, const char *v, size_t n,
                        const char *where)
{
    char out[MASK_OUTPUT_MAX];
    char canon[LOGIN_IP_TEXT_MAX];
    char err[ERR_LEN];
    size_t len = 0;
    int status = MASK_CLI_VALUE;
    rc_t rc;

    if (unmask && n >= MASK_OUTPUT_MAX)
        return mask_cli_unmask_long(ks, v, n, where);
    if (unmask) {
        rc = keyset_unmask(ks, v, n, out, sizeof out, &len, err);
        if (rc) {
            fprintf(stderr, "bootstrap unmask: %s%s\n", where, err);
            goto out;
        }
    } else {
        /* The ETL's own rule, so that the output is what masked_ip holds. */
        if (!raw && login_ip_canonical(v, n, canon)) {
            v = canon;
            n = strlen(canon);
        }
        rc = mask_value(keyset_current(ks), v, n, out, &len);
        if (rc == RC_TOOBIG) {
            fprintf(stderr, "bootstrap mask: %sthe value is %zu bytes long, at most %d\n", where, n,
                    MASK_INPUT_MAX);
            goto out;
        } else if (rc) {
            fprintf(stderr, "bootstrap mask: %scannot mask: %s\n", where, rc_strerror(rc));
            goto out;
        }
    }
    fwrite(out, 1, len, stdout);
    putchar('\n');
    status = MASK_CLI_OK;
out:
    OPENSSL_cleanse(out, sizeof out);
    return status;
}

/* Processes standard input one line at a time, as mask_cli_one does for one
 * value, printing an empty line for a line that fails so that output line N
 * answers input line N.  Returns MASK_CLI_OK, or MASK_CLI_VALUE when any
 * line failed or stdin could not be read.  The line buffer is wiped. */
static int mask_cli_stream(const struct keyset *ks, int unmask, int raw)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned long lineno = 0;
    char where[48];
    int status = MASK_CLI_OK;

    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t n = (size_t)got;
        lineno++;
        if (n && line[n - 1] == '\n')
            n--;
        if (n && line[n - 1] == '\r')
            n--;
        line[n] = '\0';
        snprintf(where, sizeof where, "line %lu: ", lineno);
        if (mask_cli_one(ks, unmask, raw, line, n, where) != MASK_CLI_OK) {
            putchar('\n');
            status = MASK_CLI_VALUE;
        }
    }
    if (ferror(stdin)) {
        fprintf(stderr, "bootstrap %s: cannot read standard input\n", unmask ? "unmask" : "mask");
        status = MASK_CLI_VALUE;
    }
    if (line)
        OPENSSL_cleanse(line, cap);
    free(line);
    return status;
}

/* See mask_cli.h.  Parses the options, creates the key from the environment,
 * then handles one value or the lines of stdin; the keys are freed (and wiped)
 * on every path. */
int mask_cli(int argc, char **argv)
{
    struct keyset *ks = NULL;
    const char *cmd = argc >= 2 ? argv[1] : "";
    const char *value;
    int unmask, raw = 0, literal = 0, argi = 2;
    int status = MASK_CLI_USAGE;

    if (strcmp(cmd, "mask") != 0 && strcmp(cmd, "unmask") != 0) {
        mask_cli_usage(stderr);
        goto out;
    }
    unmask = cmd[0] == 'u';
    for (; argi < argc && argv[argi][0] == '-' && argv[argi][1] != '\0'; argi++) {
        const char *a = argv[argi];
        if (strcmp(a, "--") == 0) {
            literal = 1;
            argi++;
            break;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            mask_cli_usage(stdout);
            status = MASK_CLI_OK;
            goto out;
        } else if (!unmask && strcmp(a, "--raw") == 0) {
            raw = 1;
        } else if (a[1] == '-') {
            /* Not echoed: whatever was typed here may be a secret. */
            fprintf(stderr,
                    "bootstrap %s: unknown option (see `bootstrap %s -h`; put -- before a "
                    "value that starts with --)\n",
                    cmd, cmd);
            goto out;
        } else {
            break; /* a value such as "-5" */
        }
    }
    if (argc - argi != 1) {
        mask_cli_usage(stderr);
        goto out;
    }
    value = argv[argi];
    ks = mask_cli_keys(cmd);
    if (!ks)
        goto out;
    if (!literal && strcmp(value, "-") == 0)
        status = mask_cli_stream(ks, unmask, raw);
    else
        status = mask_cli_one(ks, unmask, raw, value, strlen(value), "");
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "bootstrap %s: cannot write to standard output\n", cmd);
        status = MASK_CLI_VALUE;
    }
out:
    keyset_free(ks);
    return status;
}
