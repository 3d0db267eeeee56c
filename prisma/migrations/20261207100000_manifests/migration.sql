-- Subset manifests: a selection's or a score export's ordered external ids, saved with what made
-- them (dataset, encoder, prototype version, k, seed, the request's parameters and the answer's
-- summary), so they can be fetched again unchanged after any refit or ingest. A manifest stores
-- ids, not a query; it goes with its dataset.
--
-- The ids live in chunk rows of a few thousand (text[]), in list order. Creating a manifest
-- writes its chunks as the selection streams and its "manifests" row last, in one transaction:
-- the row's foreign key to the dataset takes FOR KEY SHARE on the dataset row, which holds off a
-- refit's version switch (FOR UPDATE) until commit, so it is taken only at the end. The chunks'
-- own foreign key is therefore checked at commit (DEFERRABLE INITIALLY DEFERRED).

-- CreateTable
CREATE TABLE "manifests" (
    "id" UUID NOT NULL,
    "dataset_id" UUID NOT NULL,
    "dataset_name" TEXT NOT NULL,
    "name" TEXT,
    "description" TEXT,
    "kind" TEXT NOT NULL,
    "encoder_name" TEXT,
    "encoder_sha256" CHAR(64),
    "prototype_version" INTEGER NOT NULL,
    "k" INTEGER,
    "seed" BIGINT NOT NULL,
    "parameters" JSONB NOT NULL,
    "summary" JSONB NOT NULL,
    "count" INTEGER NOT NULL,
    "sha256" CHAR(64) NOT NULL,
    "created_by_key_id" UUID,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "manifests_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "manifest_ids" (
    "manifest_id" UUID NOT NULL,
    "chunk" INTEGER NOT NULL,
    "ids" TEXT[] NOT NULL,

    CONSTRAINT "manifest_ids_pkey" PRIMARY KEY ("manifest_id","chunk")
);

-- CreateIndex
CREATE INDEX "manifests_dataset_id_created_at_id_idx" ON "manifests"("dataset_id", "created_at", "id");

-- AddForeignKey
ALTER TABLE "manifests" ADD CONSTRAINT "manifests_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "manifest_ids" ADD CONSTRAINT "manifest_ids_manifest_id_fkey" FOREIGN KEY ("manifest_id") REFERENCES "manifests"("id") ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED;
