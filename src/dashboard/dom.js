// @ts-check
/** DOM building and number formatting shared by the dashboard's views and charts. */

const SVG_NS = 'http://www.w3.org/2000/svg';

/** @param {string} id @returns {HTMLElement} */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`dashboard markup lacks #${id}`);
  return el;
}

/**
 * @param {string} tag
 * @param {Record<string, string | number | boolean | null | undefined>} [attrs]
 * @param {(Node | string)[]} [children]
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children);
  return el;
}

/**
 * @param {string} tag
 * @param {Record<string, string | number | boolean | null | undefined>} [attrs]
 * @param {SVGElement} [parent]
 * @returns {SVGElement}
 */
export function s(tag, attrs = {}, parent) {
  const el = /** @type {SVGElement} */ (document.createElementNS(SVG_NS, tag));
  setAttrs(el, attrs);
  if (parent) parent.append(el);
  return el;
}

/** @param {Element} el @param {Record<string, string | number | boolean | null | undefined>} attrs */
export function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) el.removeAttribute(name);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
}

/** An SVG <title> (tooltip and accessible name) for a mark. @param {SVGElement} el @param {string} text */
export function tooltip(el, text) {
  s('title', {}, el).textContent = text;
}

/** @param {HTMLElement} el @param {boolean} visible */
export function show(el, visible) {
  el.hidden = !visible;
}

const numberFormat = new Intl.NumberFormat('en-US');
/** @param {number} n */
export const fmt = (n) => numberFormat.format(n);
/** @param {number} x @param {number} [digits] */
export const pct = (x, digits = 0) => `${(x * 100).toFixed(digits)}%`;
/** @param {number} x */
export const score3 = (x) => x.toFixed(3);

/** @param {string | null} iso */
export function ago(iso) {
  if (!iso) return '';
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

/** @param {string} name */
export const enc = (name) => encodeURIComponent(name);
