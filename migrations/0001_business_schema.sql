-- The business side of a trade consumer, as the design note describes it: the trade row, an
-- outbox row for downstream consumers, and the position the trade moves. idembench applies these
-- migrations itself, in a schema of its own per run.

CREATE TABLE trades (
    trade_id   BIGINT      NOT NULL,
    account    INTEGER     NOT NULL,
    instrument INTEGER     NOT NULL,
    side       SMALLINT    NOT NULL,
    quantity   INTEGER     NOT NULL,
    price      BIGINT      NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The design note leans on this constraint ("duplicate writes would violate unique
    -- constraints"); `--no-unique-constraint` drops it to show what happens without it.
    CONSTRAINT trades_trade_id_key UNIQUE (trade_id)
);

-- Deliberately no unique constraint: an outbox row is what a duplicate leaks downstream.
CREATE TABLE outbox (
    id         BIGSERIAL   PRIMARY KEY,
    trade_id   BIGINT      NOT NULL,
    payload    BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE positions (
    account    INTEGER NOT NULL,
    instrument INTEGER NOT NULL,
    quantity   BIGINT  NOT NULL,
    PRIMARY KEY (account, instrument)
);

-- Processed-message table for the strategies that keep idempotency in the database.
CREATE TABLE inbox (
    trade_id     BIGINT      PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
