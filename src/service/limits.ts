/**
 * The size limits of what a client may send, stated once. REST schemas, gRPC checks, the service's
 * own validation and the HTTP router's path-parameter limit all derive from these.
 * Lengths count Unicode code points (what JSON Schema's maxLength counts), not UTF-16 units.
 */

/** Dataset names: letters, digits, ".", "_" and "-", starting with a letter or digit. */
export const DATASET_NAME_MAX_LENGTH = 128;
export const DATASET_NAME_PATTERN = `^[A-Za-z0-9][A-Za-z0-9._-]{0,${DATASET_NAME_MAX_LENGTH - 1}}$`;

/** An item's external id: any text without NUL or lone surrogates. */
export const EXTERNAL_ID_MAX_LENGTH = 512;

/** An item's metadata object, as JSON text in UTF-8. */
export const METADATA_MAX_BYTES = 16 * 1024;

/** API key names. */
export const KEY_NAME_MAX_LENGTH = 128;

/** Datasets one API key may be limited to. */
export const KEY_MAX_DATASETS = 1000;

/** Score bins a `stratified` selection may ask for. */
export const MAX_SELECTION_BINS = 10_000;

/** How deeply a request's JSON may nest (objects and arrays), metadata included. */
export const MAX_NESTING_DEPTH = 32;

/**
 * The longest path parameter the router accepts, in UTF-16 units after percent-decoding (what the
 * router measures): an external id of the maximum length made only of astral code points.
 */
export const MAX_PATH_PARAM_LENGTH = EXTERNAL_ID_MAX_LENGTH * 2;

/** Length in code points (a surrogate pair counts once). */
export function codePointLength(text: string): number {
  let surrogatePairs = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        surrogatePairs++;
        i++;
      }
    }
  }
  return text.length - surrogatePairs;
}

/** Duplicate groups per page when a request names no page size, and the most a page holds. */
export const DEFAULT_GROUP_PAGE_LIMIT = 500;
export const MAX_GROUP_PAGE_LIMIT = 5000;

/** A manifest's name and description (code points). */
export const MANIFEST_NAME_MAX_LENGTH = 128;
export const MANIFEST_DESCRIPTION_MAX_LENGTH = 2048;

/** Manifests per listing page when a request names no limit, and the most a page holds. */
export const DEFAULT_MANIFEST_PAGE_LIMIT = 100;
export const MAX_MANIFEST_PAGE_LIMIT = 1000;
