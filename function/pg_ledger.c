/* pg_ledger.c - the ledger lookups of the Postgres sink: the batch's ids
 * committed before (in the ledger and in its earlier layouts), and the keys
 * taken back out of the ledger before COMMIT. */
#define _DEFAULT_SOURCE
#include "pg_int.h"

const struct earlier EARLIER[N_EARLIER] = {
    {EARLIER_V2, KEYS_V2,
     "SELECT l.message_id FROM " EARLIER_V2 " l JOIN unnest($1::timestamptz[], $2::text[]) "
     "AS b(sent_at, message_id) ON l.sent_at = b.sent_at "
     "AND l.message_id = b.message_id COLLATE \"C\"",
     EARLIER_MARK_SQL(EARLIER_V2, " WHERE message_id <> ''", MARKER_V2),
     EARLIER_ACTIVE_SQL(MARKER_V2)},
    {EARLIER_V1, KEYS_V1, "SELECT message_id FROM " EARLIER_V1 " WHERE message_id = ANY($1)",
     EARLIER_MARK_SQL(EARLIER_V1, "", MARKER_V1), EARLIER_ACTIVE_SQL(MARKER_V1)},
};

/* Sends `sql` with the keys of the rows whose state, masked by `mask`,
 * equals `want`, as binary array parameters built in s->scratch, never SQL
 * text: for KEYS_LEDGER $1 the distinct slots among them, $2 their slots
 * (int2[]), $3 their sent_at (timestamptz[]), $4 their ledger keys
 * (uuid[]), answered in binary; for KEYS_V2 $1 their sent_at and $2 their
 * message ids (text[]); for KEYS_V1 the ids alone.  Returns RC_OK (the
 * query is sent), RC_NOMEM, or RC_DB with the attempt marked broken
 * (`what`). */
static rc_t send_keys(struct pg_sink *s, const char *sql, uint8_t mask, uint8_t want,
                      enum keys keys, const char *what)
{
    struct buf *b = &s->scratch;
    size_t count = 0, at[5] = {0};
    uint32_t slots = 0; /* bit k: slot k is among the rows */
    int nslots = 0, np = 0;

    for (size_t i = 0; i < s->n; i++) {
        if ((s->dup[i] & mask) == want) {
            count++;
            slots |= UINT32_C(1) << s->slot[i];
        }
    }
    buf_reset(b);
    if (keys == KEYS_LEDGER) {
        for (int k = 0; k <= SLOT_NONE; k++)
            nslots += (slots >> k) & 1;
        pg_put_array_header(b, INT2_OID, (size_t)nslots);
        for (int k = 0; k <= SLOT_NONE; k++) {
            if ((slots >> k) & 1) {
                pg_put_u32(b, 2);
                pg_put_u16(b, (uint16_t)k);
            }
        }
        at[++np] = b->len;
        pg_put_array_header(b, INT2_OID, count);
        for (size_t i = 0; i < s->n; i++) {
            if ((s->dup[i] & mask) == want) {
                pg_put_u32(b, 2);
                pg_put_u16(b, s->slot[i]);
            }
        }
        at[++np] = b->len;
    }
    if (keys != KEYS_V1) {
        pg_put_array_header(b, TIMESTAMPTZ_OID, count);
        for (size_t i = 0; i < s->n; i++) {
            if ((s->dup[i] & mask) == want) {
                pg_put_u32(b, 8);
                pg_put_u64(b, (uint64_t)s->sent_at[i]);
            }
        }
        at[++np] = b->len;
    }
    pg_put_array_header(b, keys == KEYS_LEDGER ? UUID_OID : TEXT_OID, count);
    for (size_t i = 0; i < s->n; i++) {
        if ((s->dup[i] & mask) != want)
            continue;
        if (keys == KEYS_LEDGER) {
            pg_put_u32(b, 16);
            buf_append(b, s->key[i], 16);
        } else {
            pg_put_text(b, s->ids[i], s->id_len[i]);
        }
    }
    at[++np] = b->len;
    if (b->err)
        return b->err;
    static const Oid ledger_types[4] = {INT2_ARRAY_OID, INT2_ARRAY_OID, TIMESTAMPTZ_ARRAY_OID,
                                        UUID_ARRAY_OID};
    static const Oid v2_types[2] = {TIMESTAMPTZ_ARRAY_OID, TEXT_ARRAY_OID};
    static const Oid v1_types[1] = {TEXT_ARRAY_OID};
    const char *values[4];
    int lengths[4], formats[4];
    for (int k = 0; k < np; k++) {
        values[k] = b->data + at[k];
        lengths[k] = (int)(at[k + 1] - at[k]);
        formats[k] = 1;
    }
    const Oid *types = keys == KEYS_LEDGER ? ledger_types : keys == KEYS_V2 ? v2_types : v1_types;
    if (!PQsendQueryParams(s->conn, sql, np, types, values, lengths, formats,
                           keys == KEYS_LEDGER)) {
        pg_fail(s, NULL, what);
        return RC_DB;
    }
    return RC_OK;
}

/* Finds which of the batch's messages not yet marked are committed already
 * and marks them: in the ledger by its key (earlier < 0) or in the earlier
 * layout EARLIER[earlier] by its own.  The values travel as binary array
 * parameters, never as SQL text; the answer maps back to rows by the
 * 16-byte key (or, from an earlier layout, by the message id).  Returns
 * RC_OK (*found = how many new ones), RC_TIMEOUT, RC_DB or RC_NOMEM. */
rc_t pg_mark_duplicates(struct pg_sink *s, int earlier, size_t *found)
{
    PGresult *res = NULL;
    rc_t rc;

    *found = 0;
    if ((rc = idset_reset(&s->lookup, s->n)) != RC_OK)
        return rc;
    for (size_t i = 0; i < s->n; i++) {
        if (s->dup[i])
            continue;
        if (earlier < 0)
            idset_put(&s->lookup, (const char *)s->key[i], 16, i);
        else
            idset_put(&s->lookup, s->ids[i], s->id_len[i], i);
    }
    if ((rc = send_keys(s, earlier < 0 ? FIND_DUPLICATES_SQL : EARLIER[earlier].find_sql, 0xff,
                        RS_PENDING, earlier < 0 ? KEYS_LEDGER : EARLIER[earlier].keys,
                        "duplicates")) != RC_OK)
        return rc;
    for (;;) {
        rc_t w = pg_next_result(s, &res);
        if (w) {
            pg_fail(s, NULL, w == RC_TIMEOUT ? "timeout" : "duplicates");
            return w;
        }
        if (!res)
            break;
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            pg_fail(s, res, "duplicates");
            rc = RC_DB;
        } else {
            for (int r = 0; r < PQntuples(res); r++) {
                size_t i =
                    idset_get(&s->lookup, PQgetvalue(res, r, 0), (size_t)PQgetlength(res, r, 0));
                if (i != (size_t)-1 && !s->dup[i]) {
                    s->dup[i] = RS_DUP;
                    (*found)++;
                }
            }
        }
        PQclear(res);
    }
    return rc;
}

/* Takes the rows refused in the open transaction back out of its ledger
 * (UNLEDGER_SQL, through the ledger's key: send_keys).
 * Returns RC_OK, RC_TIMEOUT, RC_DB or RC_NOMEM. */
rc_t pg_unledger(struct pg_sink *s)
{
    size_t count = 0;
    rc_t rc = RC_OK;

    for (size_t i = 0; i < s->n; i++)
        count += (s->dup[i] & RS_IN_LEDGER) != 0;
    if (count == 0)
        return RC_OK;
    if ((rc = send_keys(s, UNLEDGER_SQL, RS_IN_LEDGER, RS_IN_LEDGER, KEYS_LEDGER, "unledger")) !=
        RC_OK)
        return rc;
    for (;;) {
        PGresult *res = NULL;
        rc_t w = pg_next_result(s, &res);
        if (w) {
            pg_fail(s, NULL, w == RC_TIMEOUT ? "timeout" : "unledger");
            return w;
        }
        if (!res)
            break;
        if (PQresultStatus(res) != PGRES_COMMAND_OK && !rc) {
            pg_fail(s, res, "unledger");
            rc = RC_DB;
        }
        PQclear(res);
    }
    return rc;
}
