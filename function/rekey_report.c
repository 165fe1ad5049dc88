/* rekey_report.c - what `bootstrap rekey` tells the operator: the progress
 * line on stderr while it works, the counts by key id of each table, and the
 * one summary line on stdout.  Counts only: never a value. */
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "rekey.h"
#include "rekey_int.h"

#define REKEY_PROGRESS_MS 2000 /* between progress lines */

/* Writes v with thousands separators into out; returns out.  Cannot fail. */
const char *rekey_num(uint64_t v, char out[REKEY_NUM_LEN])
{
    char digits[24];
    size_t n = (size_t)snprintf(digits, sizeof digits, "%llu", (unsigned long long)v), o = 0;

    for (size_t i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
    return out;
}

/* See rekey_int.h: "rekey: DONE of TOTAL rows (P%), RATE rows/s, about S s
 * left", every REKEY_PROGRESS_MS. */
void rekey_progress(struct rekey *r)
{
    char done[REKEY_NUM_LEN], total[REKEY_NUM_LEN], rate_s[REKEY_NUM_LEN];
    int64_t now = clock_mono_ms();
    uint64_t seen = r->st.rows_visited;
    double secs = (double)(now - r->started_ms) / 1000.0;
    double rate = secs > 0 ? (double)seen / secs : 0;
    double pct = r->total ? 100.0 * (double)seen / (double)r->total : 100.0;

    if (now - r->progress_ms < REKEY_PROGRESS_MS)
        return;
    r->progress_ms = now;
    fprintf(stderr, "rekey: %s of %s rows (%.1f%%), %s rows/s", rekey_num(seen, done),
            rekey_num(r->total, total), pct > 100 ? 100.0 : pct, rekey_num((uint64_t)rate, rate_s));
    if (rate > 0 && seen < r->total)
        fprintf(stderr, ", about %.0f s left", (double)(r->total - seen) / rate);
    if (r->busy)
        fprintf(stderr, "; the tables are being loaded: working %ld%% of the time", r->busy_share);
    fputc('\n', stderr);
}

/* Writes the kind of a counted key id ("current", "retired", "not in the
 * set") for the tables; cannot fail. */
static const char *rekey_id_kind(const struct rekey *r, const char *id)
{
    for (size_t i = 0; i < keyset_count(r->keys); i++)
        if (strcmp(mask_key_id(keyset_key(r->keys, i)), id) == 0)
            return i == 0 ? "current" : "retired";
    return "not in the set";
}

/* Prints t's counts by key id to out, one line per id, one column per
 * masked column; *left gets the values under another key id than the
 * current one (retired or unknown).  Cannot fail. */
static void rekey_print_ids(FILE *out, const struct rekey *r, const struct rekey_table *t,
                            uint64_t *left)
{
    char num[REKEY_NUM_LEN], label[64];

    fprintf(out, "  %-26s", "key id");
    for (size_t j = 0; j < t->ncols; j++)
        fprintf(out, " %18s", t->column[j]);
    fputc('\n', out);
    for (size_t i = 0; i < t->ids.count; i++) {
        const char *id = t->ids.id[i];
        int other = *id && strcmp(rekey_id_kind(r, id), "current") != 0;
        if (*id)
            snprintf(label, sizeof label, "%s (%s)", id, rekey_id_kind(r, id));
        else
            snprintf(label, sizeof label, "(not masked values)");
        fprintf(out, "  %-26s", label);
        for (size_t j = 0; j < t->ncols; j++) {
            fprintf(out, " %18s", rekey_num(t->ids.n[i][j], num));
            *left += other ? t->ids.n[i][j] : 0;
        }
        fputc('\n', out);
    }
    if (t->ids.beyond) {
        fprintf(out, "  %-26s %18s\n", "(more key ids)", rekey_num(t->ids.beyond, num));
        *left += t->ids.beyond;
    }
}

/* Counts every present table by key id and prints the tables to out (with
 * the row counts for the dry run).  *left gets the values under other key
 * ids.  Returns RC_OK or the database failure. */
rc_t rekey_report(FILE *out, struct rekey *r, enum rekey_mode mode, uint64_t *left)
{
    char a[REKEY_NUM_LEN], b[REKEY_NUM_LEN];
    rc_t rc = RC_OK;

    *left = 0;
    for (size_t i = 0; i < r->ntables && rc == RC_OK; i++) {
        struct rekey_table *t = &r->table[i];
        if (!t->present || t->ncols == 0)
            continue;
        if ((mode == REKEY_MODE_DRY_RUN && (rc = rekey_db_count_rows(r, t)) != RC_OK) ||
            (rc = rekey_db_count_ids(r, t)) != RC_OK)
            break;
        fprintf(out, "%s (%zu heap relation%s", t->name, t->nleaves, t->nleaves == 1 ? "" : "s");
        if (t->skipped_leaves)
            fprintf(out, ", %zu foreign partitions not re-masked", t->skipped_leaves);
        fprintf(out, ")");
        if (mode == REKEY_MODE_DRY_RUN)
            fprintf(out, ": %s rows, %s with a value not under the current key %.*s",
                    rekey_num(t->rows, a), rekey_num(t->to_visit, b), (int)strlen(r->prefix) - 1,
                    r->prefix);
        fputc('\n', out);
        rekey_print_ids(out, r, t, left);
    }
    return rc;
}

/* The summary line of a run that went to its end, and its status: done when
 * the count after it finds nothing under another key id. */
int rekey_summary(const struct rekey *r, uint64_t left)
{
    char a[REKEY_NUM_LEN], b[REKEY_NUM_LEN], c[REKEY_NUM_LEN];
    double secs = (double)(r->finished_ms - r->started_ms) / 1000.0;
    const struct rekey_stats *s = &r->st;

    printf("rekey: %s: %s rows re-masked (%s values) to key %.*s in %.1f s, %s rows/s; "
           "longest transaction %lld ms",
           left ? "incomplete" : "done", rekey_num(s->rows_written, a),
           rekey_num(s->values_remasked, b), (int)strlen(r->prefix) - 1, r->prefix, secs,
           rekey_num(secs > 0 ? (uint64_t)((double)s->rows_visited / secs) : 0, c),
           (long long)s->longest_txn_ms);
    if (s->yielded_ms)
        printf(", %.1f s paused while other sessions wrote", (double)s->yielded_ms / 1000.0);
    if (s->values_failed)
        printf("; %s values do not authenticate under their key id's key",
               rekey_num(s->values_failed, a));
    if (s->values_unknown)
        printf("; %s values under key ids not in the set", rekey_num(s->values_unknown, a));
    if (s->values_too_long)
        printf("; %s values would not fit their column", rekey_num(s->values_too_long, a));
    if (left)
        printf("; %s values left under other key ids: see docs/operations.md\n",
               rekey_num(left, a));
    else
        printf("; every value is under the current key\n");
    return left ? REKEY_EXIT_LEFT : REKEY_EXIT_DONE;
}
