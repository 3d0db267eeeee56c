// Prisma CLI configuration (Prisma 7 keeps the connection URL out of schema.prisma).
// The service applies migrations itself at boot; this file lets `prisma migrate deploy`/`status`
// run against the same database on a connected machine.
import { defineConfig } from 'prisma/config';

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://localhost:5432/protoprune' },
});
