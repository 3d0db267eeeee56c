import { ByteWriter, ParquetWriter, type SchemaElement } from 'hyparquet-writer';

/** A column of a streamed Parquet file: its schema element and how a row gives its value. */
export interface ParquetColumn<T> {
  element: SchemaElement;
  value: (row: T) => string | number | null;
}

/** Rows per row group: one group is what the encoder holds (~10 MB of export rows). */
export const PARQUET_ROW_GROUP = 50_000;

/**
 * Encodes row batches as one Parquet file (hyparquet-writer, snappy), yielding its bytes a row group
 * at a time: memory holds one group, however many rows. The footer comes last, as Parquet wants.
 */
export async function* parquetStream<T>(columns: readonly ParquetColumn<T>[], batches: AsyncIterable<T[]>, rowGroup = PARQUET_ROW_GROUP): AsyncGenerator<Buffer> {
  const writer = new ByteWriter();
  const schema: SchemaElement[] = [{ name: 'root', num_children: columns.length }, ...columns.map((c) => c.element)];
  const parquet = new ParquetWriter({ writer, schema, createdBy: 'protoprune' });
  // The bytes written so far, handed over and dropped (the writer's offset keeps counting the file).
  const take = (): Buffer => {
    const bytes = Buffer.from(writer.getBytes());
    writer.index = 0;
    return bytes;
  };
  let pending: T[] = [];
  const writeGroup = () => {
    parquet.write({ columnData: columns.map((c) => ({ name: c.element.name, data: pending.map(c.value) })), rowGroupSize: pending.length });
    pending = [];
  };
  for await (const batch of batches) {
    for (const row of batch) {
      pending.push(row);
      if (pending.length === rowGroup) {
        writeGroup();
        yield take();
      }
    }
  }
  if (pending.length > 0) writeGroup();
  parquet.finish();
  yield take();
}
