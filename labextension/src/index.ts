/**
 * kernelkit's JupyterLab plugin: a thin shell around the pure modules.
 *
 * - links every notebook kernel to kernelkit over the "kernelkit" comm
 *   (link.ts, protocol v1 in docs/protocol.md);
 * - a status-bar item for the active notebook's kernel (format.ts);
 * - the "kernelkit:stop-training" command (palette, toolbar, Accel Alt .);
 * - a highlight for the `%%kmodel` line of a cell (highlight.ts).
 */

import type {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, ToolbarButton } from '@jupyterlab/apputils';
import {
  EditorExtensionRegistry,
  IEditorExtensionRegistry
} from '@jupyterlab/codemirror';
import type { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookTracker } from '@jupyterlab/notebook';
import type { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { DisposableDelegate } from '@lumino/disposable';
import type { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { statusText, statusTitle } from './format.js';
import { cellMagicHighlight } from './highlight.js';
import { KernelLink } from './link.js';
import type { ICommHandlers, ICommPort, IKernelPort } from './link.js';
import { isTraining, isVisible } from './model.js';
import { COMM_TARGET } from './protocol.js';

/** Command ids. */
export namespace CommandIDs {
  export const stopTraining = 'kernelkit:stop-training';
}

const PLUGIN_ID = 'kernelkit:plugin';

/** JupyterLab's comm as the link's port. */
function commPort(comm: Kernel.IComm): ICommPort {
  return {
    get isOpen() {
      return !comm.isDisposed;
    },
    send: data => {
      comm.send(data as Parameters<Kernel.IComm['send']>[0]);
    }
  };
}

function wire(comm: Kernel.IComm, handlers: ICommHandlers): void {
  comm.onMsg = msg => handlers.onMessage(msg.content.data);
  comm.onClose = () => handlers.onClose();
}

/** JupyterLab's kernel connection as the link's port. */
function kernelPort(kernel: Kernel.IKernelConnection): IKernelPort {
  return {
    listen: accept => {
      const target = (comm: Kernel.IComm, msg: { content: { data: unknown } }) => {
        wire(comm, accept(commPort(comm), msg.content.data));
      };
      kernel.registerCommTarget(COMM_TARGET, target);
      return () => {
        if (!kernel.isDisposed) {
          kernel.removeCommTarget(COMM_TARGET, target);
        }
      };
    },
    open: (data, handlers) => {
      const comm = kernel.createComm(COMM_TARGET);
      wire(comm, handlers);
      comm.open(data as Parameters<Kernel.IComm['open']>[0]);
      return commPort(comm);
    },
    interrupt: () => kernel.interrupt()
  };
}

/** The status-bar item: one line of text, hidden without kernelkit. */
class StatusItem extends Widget {
  constructor() {
    super({ node: document.createElement('div') });
    this.addClass('kk-StatusItem');
    this.addClass('jp-StatusBar-TextItem');
  }
}

function activate(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  statusBar: IStatusBar | null,
  palette: ICommandPalette | null,
  editorExtensions: IEditorExtensionRegistry | null
): void {
  const links = new Map<Kernel.IKernelConnection, KernelLink>();
  const changed = new Signal<object, void>(app);
  const buttons = new Map<NotebookPanel, ToolbarButton>();

  const linkOf = (panel: NotebookPanel | null): KernelLink | null => {
    const kernel = panel?.sessionContext.session?.kernel;
    return kernel ? links.get(kernel) ?? null : null;
  };
  const currentLink = () => linkOf(tracker.currentWidget);

  const refresh = () => {
    changed.emit();
    app.commands.notifyCommandChanged(CommandIDs.stopTraining);
    for (const [panel, button] of buttons) {
      const link = linkOf(panel);
      button.setHidden(!(link && isTraining(link.state)));
    }
  };

  const attach = (kernel: Kernel.IKernelConnection) => {
    if (links.has(kernel) || kernel.isDisposed || !kernel.handleComms) {
      return;
    }
    const link = new KernelLink(kernelPort(kernel));
    links.set(kernel, link);
    link.onChange(refresh);
    kernel.statusChanged.connect((_, status) => {
      if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
        link.reset();
      }
    });
    kernel.connectionStatusChanged.connect((_, status) => {
      if (status === 'connected') {
        link.connect();
      }
    });
    kernel.disposed.connect(() => {
      link.dispose();
      links.delete(kernel);
      refresh();
    });
    if (kernel.connectionStatus === 'connected') {
      link.connect();
    }
  };

  const watch = (panel: NotebookPanel) => {
    const context = panel.sessionContext;
    const onKernel = () => {
      const kernel = context.session?.kernel;
      if (kernel) {
        attach(kernel);
      }
      refresh();
    };
    context.kernelChanged.connect(onKernel);
    onKernel();
  };
  tracker.forEach(watch);
  tracker.widgetAdded.connect((_, panel) => watch(panel));
  tracker.currentChanged.connect(refresh);

  app.commands.addCommand(CommandIDs.stopTraining, {
    label: 'Stop training',
    caption:
      'Stop the running kernelkit fit at the end of the current step (Accel Alt .)',
    isEnabled: () => {
      const link = currentLink();
      return link !== null && isTraining(link.state);
    },
    execute: async () => {
      const link = currentLink();
      return link ? link.stop() : 'none';
    }
  });
  palette?.addItem({ command: CommandIDs.stopTraining, category: 'kernelkit' });

  // A toolbar button per notebook, shown while that notebook's fit runs.
  const toolbarExtension: DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> = {
    createNew: (panel: NotebookPanel): IDisposable => {
      const button = new ToolbarButton({
        className: 'kk-StopButton',
        label: 'Stop training',
        tooltip: 'Stop the running kernelkit fit (Accel Alt .)',
        onClick: () => {
          void linkOf(panel)?.stop();
        }
      });
      button.hide();
      if (!panel.toolbar.insertAfter('interrupt', 'kernelkit-stop', button)) {
        panel.toolbar.addItem('kernelkit-stop', button);
      }
      buttons.set(panel, button);
      refresh();
      return new DisposableDelegate(() => {
        buttons.delete(panel);
        button.dispose();
      });
    }
  };
  app.docRegistry.addWidgetExtension('Notebook', toolbarExtension);

  if (statusBar) {
    const item = new StatusItem();
    const render = () => {
      const link = currentLink();
      const state = link?.state;
      item.node.textContent = state ? statusText(state) : '';
      item.node.title = state ? statusTitle(state) : '';
      item.toggleClass('kk-mod-training', !!state && isTraining(state));
      item.toggleClass('kk-mod-mismatch', !!state?.mismatch);
    };
    changed.connect(render);
    render();
    statusBar.registerStatusItem(PLUGIN_ID, {
      item,
      align: 'left',
      rank: 4,
      isActive: () => {
        const link = currentLink();
        return link !== null && isVisible(link.state);
      },
      activeStateChanged: changed
    });
  }

  editorExtensions?.addExtension({
    name: 'kernelkit:cell-magic',
    factory: () => EditorExtensionRegistry.createImmutableExtension(cellMagicHighlight())
  });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Status, stop control and %%kmodel highlighting for kernelkit.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette, IEditorExtensionRegistry],
  activate
};

export default plugin;
