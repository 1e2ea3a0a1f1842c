-- For the db-offsets strategy: the consumer's position per partition, written in the same
-- transaction as the business effects, so the database (not Kafka's committed offsets) decides
-- which messages are new.
CREATE TABLE consumer_offsets (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT  NOT NULL,
    PRIMARY KEY (topic, partition)
);
