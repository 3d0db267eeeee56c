-- CreateTable
CREATE TABLE "item_thumbnails" (
    "item_id" BIGINT NOT NULL,
    "data" BYTEA NOT NULL,

    CONSTRAINT "item_thumbnails_pkey" PRIMARY KEY ("item_id")
);

-- AddForeignKey
ALTER TABLE "item_thumbnails" ADD CONSTRAINT "item_thumbnails_item_id_fkey" FOREIGN KEY ("item_id") REFERENCES "items"("id") ON DELETE CASCADE ON UPDATE CASCADE;
