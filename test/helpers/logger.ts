import { pino } from 'pino';

/** A silent logger for in-process service tests (the JSON log format is tested separately). */
export const silentLogger = pino({ level: 'silent' });
