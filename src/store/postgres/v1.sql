-- Schema version 1: tokens, the counts that keep totals cheap, and the
-- failed-login counters shared by every gateway.

CREATE TABLE tokengate_tokens (
    id            bigint   PRIMARY KEY CHECK (id > 0),
    hash          bytea    NOT NULL CHECK (length(hash) = 32),
    description   text     NOT NULL,
    user_key      text     NOT NULL,
    user_name     text     NOT NULL,
    created_by    text     NOT NULL,
    -- Epoch milliseconds; valid_until and last_accessed 0 = never.
    created       bigint   NOT NULL,
    valid_until   bigint   NOT NULL,
    last_accessed bigint   NOT NULL DEFAULT 0,
    -- 1 = READ_ONLY, 2 = READ_WRITE
    scope         smallint NOT NULL CHECK (scope IN (1, 2))
);
CREATE UNIQUE INDEX tokengate_tokens_hash ON tokengate_tokens (hash);
CREATE INDEX tokengate_tokens_user ON tokengate_tokens (user_key, id);
CREATE INDEX tokengate_tokens_expiry ON tokengate_tokens (valid_until, id) WHERE valid_until > 0;

-- Token ids, for every gateway. No CACHE: ids are handed out in order
-- across sessions.
CREATE SEQUENCE tokengate_token_ids AS bigint MINVALUE 1 NO CYCLE;

-- How many tokens each user has: the row every insert of that user locks,
-- so that the per-user limit holds, and the total of a user filter.
CREATE TABLE tokengate_users (
    user_key text   PRIMARY KEY,
    tokens   bigint NOT NULL
);

-- How many tokens there are, in 16 rows (shard = id % 16) so that
-- concurrent inserts and deletes rarely wait for each other.
CREATE TABLE tokengate_counts (
    shard smallint PRIMARY KEY,
    n     bigint   NOT NULL
);
INSERT INTO tokengate_counts (shard, n) SELECT s, 0 FROM generate_series(0, 15) AS s;

-- Consecutive failed logins per (user name in lower case, client address
-- as throttling keys it). locked_until: epoch ms; 9223372036854775807 =
-- until an admin clears it; NULL = not locked.
CREATE TABLE tokengate_failed_logins (
    user_name    text   NOT NULL,
    addr         inet   NOT NULL,
    failures     int    NOT NULL,
    locked_until bigint,
    last_failure bigint NOT NULL,
    PRIMARY KEY (user_name, addr)
);
