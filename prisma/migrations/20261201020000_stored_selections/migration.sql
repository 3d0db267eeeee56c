-- Stored selections: the ordered item ids a paged selection's first page computed, so that every
-- later page, on any replica, reads the same list whatever was ingested, deleted or refitted since.
-- A cursor names a row and an offset; rows expire when no page read them for a while.
-- No foreign key to datasets (like item_scores): an FK check takes FOR KEY SHARE on the dataset row,
-- which would wait for every ingest batch holding it FOR UPDATE. Rows of a deleted dataset are never
-- served (the stored dataset id must be the current id under the name) and are swept with expired
-- ones whenever a selection is stored.

-- CreateTable
CREATE TABLE "selections" (
    "id" UUID NOT NULL,
    "dataset_id" UUID NOT NULL,
    "version" INTEGER NOT NULL,
    "request_hash" CHAR(64) NOT NULL,
    "digest" CHAR(64) NOT NULL,
    "total" INTEGER NOT NULL,
    "size" INTEGER NOT NULL,
    "item_ids" BYTEA NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "selections_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "selections_dataset_id_digest_key" ON "selections"("dataset_id", "digest");

-- 8 bytes per item id (big-endian int8), stored out of line and uncompressed, so that a page's
-- substring() reads only the TOAST chunks it covers.
ALTER TABLE "selections" ALTER COLUMN "item_ids" SET STORAGE EXTERNAL;

-- The request budget (RATE_LIMIT_PER_MINUTE) shared by every replica and both transports: one
-- fixed window per key, one upsert per admitted request. UNLOGGED: counters write no WAL, so the
-- upsert commits without a WAL flush; a crash or failover merely resets the current windows.

-- CreateTable
CREATE UNLOGGED TABLE "rate_windows" (
    "key" TEXT NOT NULL,
    "window_start" TIMESTAMPTZ(3) NOT NULL,
    "count" INTEGER NOT NULL,

    CONSTRAINT "rate_windows_pkey" PRIMARY KEY ("key")
);
