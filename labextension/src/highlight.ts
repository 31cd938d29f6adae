/**
 * CodeMirror 6 extension: mark the `%%kmodel` line of a cell.
 *
 * JupyterLab 4 edits Python notebook cells with the Python grammar
 * (mime text/x-ipython maps to @codemirror/lang-python), which parses
 * `%%kmodel` as two `%` operators and a name: the body keeps full Python
 * highlighting, but the magic line looks like broken code. This decorates
 * that line with the class "kk-cellMagic" (styled as a meta token in
 * style/index.css) instead of switching the cell's language.
 */

import type { Extension } from '@codemirror/state';
import {
  Decoration,
  DecorationSet,
  EditorView,
  ViewPlugin,
  ViewUpdate
} from '@codemirror/view';
import { cellMagicRange } from './magic.js';

const magicLine = Decoration.line({ class: 'kk-cellMagic' });

function decorate(view: EditorView): DecorationSet {
  // Only the first line can hold a cell magic; read just that much.
  const first = view.state.doc.line(1);
  const range = cellMagicRange(first.text);
  return range ? Decoration.set([magicLine.range(first.from)]) : Decoration.none;
}

/** The extension to add to every cell editor. */
export function cellMagicHighlight(): Extension {
  return ViewPlugin.fromClass(
    class {
      decorations: DecorationSet;
      constructor(view: EditorView) {
        this.decorations = decorate(view);
      }
      update(update: ViewUpdate): void {
        if (update.docChanged) {
          this.decorations = decorate(update.view);
        }
      }
    },
    { decorations: plugin => plugin.decorations }
  );
}
