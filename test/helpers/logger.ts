import { pino } from 'pino';

/**
 * The logger of in-process service tests: silent unless TEST_LOG_FILE names a file to write the
 * JSON logs to (TEST_LOG_LEVEL, default debug), for debugging a failing test.
 */
export const silentLogger = process.env.TEST_LOG_FILE
  ? pino({ level: process.env.TEST_LOG_LEVEL ?? 'debug' }, pino.destination({ dest: process.env.TEST_LOG_FILE, sync: true }))
  : pino({ level: 'silent' });
