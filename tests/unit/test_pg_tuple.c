/* test_pg_tuple.c - the Postgres sink's binary encoding, byte for byte, with
 * no server: the ledger's and user_logins' binary COPY tuples (NULLs,
 * lengths, dates), the ledger's key, slot and sent_at of a message, and the
 * big-endian query parameters.  The expected bytes are written out by hand
 * from PostgreSQL's binary COPY format (a 16-bit field count, then each
 * field as a 32-bit length, -1 for NULL, and its bytes). */
#include "check.h"

#include <stdint.h>

#include "pg_int.h"

/* Compares b's bytes with the hexadecimal text want (spaces ignored). */
static void check_hex(const struct buf *b, const char *want, const char *what)
{
    char got[1024];
    size_t n = 0, w = 0;

    for (size_t i = 0; i < b->len && n + 3 < sizeof got; i++)
        n += (size_t)snprintf(got + n, sizeof got - n, "%02x", (unsigned char)b->data[i]);
    got[n] = '\0';
    char clean[1024];
    for (const char *p = want; *p && w + 1 < sizeof clean; p++)
        if (*p != ' ')
            clean[w++] = *p;
    clean[w] = '\0';
    if (strcmp(got, clean) != 0) {
        printf("#   %s:\n#     got  %s\n#     want %s\n", what, got, clean);
        CHECK(!"bytes differ");
    }
}

static void test_key_tuple(void)
{
    struct buf b;
    uint8_t key[16];

    check_case("ledger tuple: three fields, smallint slot, timestamptz, uuid");
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)(0xa0 + i);
    buf_init(&b, 1024);
    CHECK_EQ_INT(pg_tuple_key(&b, 5, INT64_C(0x0102030405060708), key), RC_OK);
    CHECK_EQ_INT(b.len, PG_KEY_TUPLE_SIZE);
    check_hex(&b,
              "0003 00000002 0005 00000008 0102030405060708 "
              "00000010 a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
              "key tuple");
    buf_free(&b);

    check_case("ledger tuple: no SentTimestamp is slot SLOT_NONE, sent_at -infinity");
    buf_init(&b, 1024);
    CHECK_EQ_INT(pg_tuple_key(&b, pg_ledger_slot(-1), pg_sent_at(-1), key), RC_OK);
    check_hex(&b,
              "0003 00000002 0012 00000008 8000000000000000 "
              "00000010 a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
              "key tuple without SentTimestamp");
    buf_free(&b);
}

static void test_row_tuple(void)
{
    struct buf b;
    struct pg_row row = {
        .user_id = "u1",
        .user_id_len = 2,
        .device_type = "ios",
        .device_type_len = 3,
        .masked_ip = "IP",
        .masked_ip_len = 2,
        .masked_device_id = "DEV",
        .masked_device_id_len = 3,
        .locale = "en-US",
        .locale_len = 5,
        .has_app_version = 1,
        .app_version = 230,
        .create_date = 10958, /* 2000-01-02: day 1 of PostgreSQL's epoch */
    };

    check_case("row tuple: seven fields, text lengths, int4, date since 2000-01-01");
    buf_init(&b, 1024);
    CHECK_EQ_INT(pg_tuple_row(&b, &row), RC_OK);
    check_hex(&b,
              "0007 00000002 7531 00000003 696f73 00000002 4950 00000003 444556 "
              "00000005 656e2d5553 00000004 000000e6 00000004 00000001",
              "row tuple");
    buf_free(&b);

    check_case("row tuple: NULL text fields and app_version are length -1, no bytes");
    row.device_type = NULL;
    row.locale = NULL;
    row.has_app_version = 0;
    row.create_date = 0; /* 1970-01-01: 10,957 days before 2000-01-01 */
    buf_init(&b, 1024);
    CHECK_EQ_INT(pg_tuple_row(&b, &row), RC_OK);
    check_hex(&b,
              "0007 00000002 7531 ffffffff 00000002 4950 00000003 444556 "
              "ffffffff ffffffff 00000004 ffffd533",
              "row tuple with NULLs");
    buf_free(&b);

    check_case("row tuple: an empty text is length 0, not NULL; tuples append in order");
    row.user_id = "";
    row.user_id_len = 0;
    row.create_date = 10957; /* 2000-01-01 */
    buf_init(&b, 1024);
    CHECK_EQ_INT(pg_tuple_key(&b, 1, 0, (const uint8_t[16]){0}), RC_OK);
    size_t key_end = b.len;
    CHECK_EQ_INT(pg_tuple_row(&b, &row), RC_OK);
    CHECK_EQ_INT(key_end, PG_KEY_TUPLE_SIZE);
    struct buf tail = {.data = b.data + key_end, .len = b.len - key_end};
    check_hex(&tail,
              "0007 00000000 ffffffff 00000002 4950 00000003 444556 "
              "ffffffff ffffffff 00000004 00000000",
              "row tuple after a key tuple");
    buf_free(&b);

    check_case("row tuple: a buffer too small fails and keeps what it held");
    char small[48];
    buf_wrap(&b, small, sizeof small);
    row.user_id = "u1";
    row.user_id_len = 2;
    CHECK_EQ_INT(pg_tuple_key(&b, 1, 0, (const uint8_t[16]){0}), RC_OK);
    CHECK(pg_tuple_row(&b, &row) != RC_OK);
    CHECK_EQ_INT(b.len, PG_KEY_TUPLE_SIZE);
    CHECK_EQ_INT(b.err, RC_OK); /* not sticky: the key tuple stays usable */
}

static void test_ledger_key(void)
{
    uint8_t key[16];
    struct buf b = {.data = (char *)key, .len = sizeof key};

    check_case("ledger key: a lowercase canonical UUID is that UUID");
    /* Read through a guarded copy: not one byte past the id. */
    CHECK_EQ_INT(pg_ledger_key(check_guard("0c7a5ad2-0f0d-4a44-9b3e-5a6f1d2c3b4e", 36), 36, key),
                 RC_OK);
    check_hex(&b, "0c7a5ad20f0d4a449b3e5a6f1d2c3b4e", "uuid key");

    check_case("ledger key: any other id is SHA-256's first 16 bytes, version 8, variant 10");
    /* SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 ... (FIPS 180-2) */
    CHECK_EQ_INT(pg_ledger_key(check_guard("abc", 3), 3, key), RC_OK);
    check_hex(&b, "ba7816bf8f018fea814140de5dae2223", "hashed key");

    check_case("ledger key: upper case is not parsed case-insensitively");
    uint8_t upper[16];
    CHECK_EQ_INT(pg_ledger_key("0C7A5AD2-0F0D-4A44-9B3E-5A6F1D2C3B4E", 36, upper), RC_OK);
    CHECK(memcmp(upper, key, 16) != 0);
    CHECK_EQ_INT(upper[6] >> 4, 8);
    CHECK_EQ_INT(upper[8] >> 6, 2);

    check_case("ledger key: version 0 (the markers' version) is hashed, never taken as is");
    CHECK_EQ_INT(pg_ledger_key(MARKER_V1, 36, key), RC_OK);
    CHECK_EQ_INT(key[6] >> 4, 8);
    CHECK_EQ_INT(pg_ledger_key(MARKER_V2, 36, key), RC_OK);
    CHECK_EQ_INT(key[6] >> 4, 8);

    check_case("ledger key: a UUID-shaped id with a non-hex digit is hashed");
    CHECK_EQ_INT(pg_ledger_key("0c7a5ad2-0f0d-4a44-9b3e-5a6f1d2c3b4g", 36, key), RC_OK);
    CHECK_EQ_INT(key[6] >> 4, 8);
    CHECK(key[0] != 0x0c || key[1] != 0x7a);
}

static void test_slot_and_sent_at(void)
{
    const int64_t day = INT64_C(86400000);
    const int64_t dec5 = INT64_C(20792) * day; /* 2026-12-05 00:00 UTC */

    check_case("slot: the UTC day modulo LEDGER_SLOTS; none without SentTimestamp");
    CHECK_EQ_INT(LEDGER_SLOTS, 18);
    CHECK_EQ_INT(pg_ledger_slot(-1), SLOT_NONE);
    CHECK_EQ_INT(pg_ledger_slot(0), 0);
    CHECK_EQ_INT(pg_ledger_slot(day - 1), 0);
    CHECK_EQ_INT(pg_ledger_slot(day), 1);
    CHECK_EQ_INT(pg_ledger_slot(17 * day), 17);
    CHECK_EQ_INT(pg_ledger_slot(18 * day), 0);
    CHECK_EQ_INT(pg_ledger_slot(dec5), 20792 % 18);
    CHECK_EQ_INT(pg_ledger_slot(dec5 + day - 1), 20792 % 18);
    CHECK_EQ_INT(pg_ledger_slot(dec5 + day), 20793 % 18);

    check_case("sent_at: microseconds since 2000-01-01; -infinity without SentTimestamp");
    CHECK(pg_sent_at(-1) == INT64_MIN);
    CHECK_EQ_INT(pg_sent_at(INT64_C(946684800000)), 0);
    CHECK_EQ_INT(pg_sent_at(INT64_C(946684800001)), 1000);
    CHECK_EQ_INT(pg_sent_at(0), INT64_C(-946684800000000));
    CHECK_EQ_INT(pg_sent_at(dec5), (dec5 - INT64_C(946684800000)) * 1000);
}

static void test_parameters(void)
{
    struct buf b;

    check_case("parameters: big-endian integers, a text element, NULL as length -1");
    buf_init(&b, 256);
    pg_put_u16(&b, 0x0102);
    pg_put_u32(&b, 0x03040506);
    pg_put_u64(&b, UINT64_C(0x0708090a0b0c0d0e));
    pg_put_text(&b, "id", 2);
    pg_put_text(&b, NULL, 5);
    CHECK_EQ_INT(b.err, RC_OK);
    check_hex(&b, "0102 03040506 0708090a0b0c0d0e 00000002 6964 ffffffff", "parameters");
    buf_free(&b);

    check_case("parameters: a one-dimensional array header without NULLs");
    buf_init(&b, 256);
    pg_put_array_header(&b, 25, 3);
    check_hex(&b, "00000001 00000000 00000019 00000003 00000001", "array header");
    buf_free(&b);
}

int main(void)
{
    test_key_tuple();
    test_row_tuple();
    test_ledger_key();
    test_slot_and_sent_at();
    test_parameters();
    return check_finish();
}
