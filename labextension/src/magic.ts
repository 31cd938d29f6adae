/**
 * Where a `%%kmodel` cell magic sits in a cell's text (pure; unit-tested).
 */

/** The cell magic kernelkit provides. */
export const CELL_MAGIC = 'kmodel';

const MAGIC_LINE = new RegExp(`^[ \\t]*%%${CELL_MAGIC}(?=\\s|$)[^\\n]*`);

/**
 * Returns the [from, to) range of the `%%kmodel` line if the cell starts
 * with one (IPython only treats a cell magic on the first line as such),
 * else null.
 */
export function cellMagicRange(text: string): { from: number; to: number } | null {
  const match = MAGIC_LINE.exec(text);
  if (!match) {
    return null;
  }
  return { from: 0, to: match[0].length };
}
