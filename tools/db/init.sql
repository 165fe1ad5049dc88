-- The table login-etl writes, exactly as docs/behaviour.md, "Output table" defines it. In production the
-- upstream environment creates it; here the postgres container runs this file once, when
-- it initialises an empty data directory (docker-entrypoint-initdb.d). The function itself
-- creates the same table (and its own bookkeeping tables) only if they are missing.
CREATE TABLE IF NOT EXISTS user_logins(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
);
