/* mask_cli.h - the `bootstrap mask` and `bootstrap unmask` commands, for an
 * authorised person who holds the masking key (docs/behaviour.md, "Masking"). */
#ifndef MASK_CLI_H
#define MASK_CLI_H

/* Runs `bootstrap mask [--raw] [--] VALUE|-` or `bootstrap unmask [--] MASKED|-`:
 * argv[1] is "mask" or "unmask", the keys come from MASKING_KEY (128 hex
 * characters or a keyset document), MASKING_KEY_ID (default k1) and
 * MASKING_KEYS_RETIRED (keyset.h): mask uses the current key, unmask the key
 * the value's prefix names.  Prints each result and a
 * newline on stdout, errors on stderr (never the key).  Returns the process
 * exit status: 0 done, 1 a value failed (does not unmask, too long, or stdout
 * failed), 2 usage or configuration error.  Takes nothing over; main()
 * returns what this returns. */
int mask_cli(int argc, char **argv);

#endif
