-- Schema version 2: where a token may be used from, where it was last used
-- from, the secret a rotation replaced (while its grace lasts), and the
-- expiry and creation notices sent.

ALTER TABLE tokengate_tokens
    -- Networks the token works from; empty = anywhere.
    ADD COLUMN allowed_ips        cidr[] NOT NULL DEFAULT '{}',
    -- The client address of the use recorded in last_accessed.
    ADD COLUMN last_accessed_from inet,
    -- The secret before the latest rotation, working until previous_until
    -- (epoch ms); both NULL when there is none.
    ADD COLUMN previous_hash      bytea CHECK (length(previous_hash) = 32),
    ADD COLUMN previous_until     bigint;
CREATE UNIQUE INDEX tokengate_tokens_previous_hash ON tokengate_tokens (previous_hash)
    WHERE previous_hash IS NOT NULL;

-- One row per notice (expiry threshold or creation, per channel) a gateway
-- claimed: until lease_until (epoch ms) while it is being sent, for good
-- once sent. Gone with the token.
CREATE TABLE tokengate_notices (
    token_id    bigint  NOT NULL REFERENCES tokengate_tokens (id) ON DELETE CASCADE,
    notice      text    NOT NULL,
    lease_until bigint  NOT NULL,
    sent        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (token_id, notice)
);
