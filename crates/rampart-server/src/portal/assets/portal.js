// Rampart portal: small enhancements over pages that work without script.
// Loaded as a file (the Content-Security-Policy forbids inline script).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A select marked data-autosubmit submits its form on change (theme, page size).
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }

  // A checkbox with data-select-all="NAME" ticks every checkbox named NAME in its form.
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    all.addEventListener("change", () => {
      const name = all.dataset.selectAll;
      for (const box of all.form.querySelectorAll(`input[type=checkbox][name="${name}"]`)) {
        box.checked = all.checked;
      }
    });
  }

  // "/" focuses the page's search or filter box, as in most consoles.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
    const search = document.querySelector("[data-search]");
    if (search) {
      event.preventDefault();
      search.focus();
    }
  });
});

// Rules and settings: Sigma files read into the upload box, and copy buttons for values shown
// once (new tokens, the enroll command). Without script the box is typed into and the values are
// selected by hand.
document.addEventListener("DOMContentLoaded", () => {
  const picker = document.getElementById("rule-file");
  const yaml = document.getElementById("rule-yaml");
  if (picker && yaml) {
    picker.closest(".file-pick").hidden = false;
    picker.addEventListener("change", async () => {
      const texts = await Promise.all(Array.from(picker.files, (file) => file.text()));
      if (texts.length === 0) return;
      // Several files become several documents of one upload.
      yaml.value = texts.map((text) => text.trim()).filter(Boolean).join("\n---\n") + "\n";
      picker.value = "";
      yaml.focus();
    });
  }

  // A refused upload: select the line the error is on.
  const refused = document.querySelector("textarea[data-error-line]");
  if (refused) {
    const lines = refused.value.split("\n");
    const line = Math.min(Number(refused.dataset.errorLine), lines.length);
    const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
    refused.focus();
    refused.setSelectionRange(start, start + lines[line - 1].length);
  }

  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.querySelector(button.dataset.copy);
    // The clipboard exists only in secure contexts (HTTPS, localhost).
    if (!source || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  }
});

// Advanced hunting: KQL highlighting under the editor (a transparent textarea over a highlighted
// copy of its text, kept in sync on input and scroll), the reported error marked where it is,
// Ctrl+Enter to run, schema names inserted at the cursor, a schema filter, Enter in the save
// and rule fields pressing their own button, and a question before a saved query is deleted.
// Without script the editor is a plain textarea and every action is a form.
document.addEventListener("DOMContentLoaded", () => {
  const editor = document.querySelector("[data-kql-editor]");
  const textarea = editor && editor.querySelector("textarea");
  if (!editor || !textarea) return;

  const words = (text) => new Set(text.trim().split(/\s+/));
  const KEYWORDS = words(`
    where filter project project-away project-keep project-rename project-reorder project-smart extend
    summarize count take limit top sort order distinct join lookup union mv-expand mvexpand mv-apply
    parse parse-where parse-kv evaluate make-series render as invoke getschema serialize sample
    sample-distinct search find fork facet partition scan top-nested top-hitters print let set
    materialize datatable range by on kind with asc desc nulls first last step from to of
    withsource isfuzzy inner innerunique leftouter rightouter fullouter leftanti rightanti
    leftsemi rightsemi anti semi`);
  const WORD_OPS = words(`
    and or not has has_cs hasprefix hasprefix_cs hassuffix hassuffix_cs contains contains_cs
    notcontains notcontainscs startswith startswith_cs endswith endswith_cs in has_any has_all
    between matches regex like notlike likecs notlikecs`);
  const LITERALS = words("true false null");
  // Tried in order at each position; the first that matches makes the token.
  const RULES = [
    ["k-comment", /\/\/[^\n]*/y],
    ["k-string", /```[\s\S]*?(?:```|$)|~~~[\s\S]*?(?:~~~|$)/y],
    ["k-string", /[hH]?@(?:"(?:[^"\n]|"")*"?|'(?:[^'\n]|'')*'?)/y],
    ["k-string", /[hH]?(?:"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)/y],
    ["k-number", /(?:datetime|timespan|time|guid)\([^)\n]*\)?/y],
    ["k-number", /(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:microseconds?|milliseconds?|ticks?|minutes?|seconds?|hours?|days?|hrs?|min|sec|ms|d|h|m|s)?)(?![\p{L}\p{N}_])/uy],
    ["word", /[\p{L}_$][\p{L}\p{N}_]*(?:-[\p{L}]+)*/uy],
    ["k-op", /!(?:has|contains|startswith|endswith|hasprefix|hassuffix|in|between)(?:_cs)?~?(?![\p{L}\p{N}_])/uy],
    ["k-op", /==|!=|<>|=~|!~|<=|>=|\.\.|[|=<>+\-*/%!~]/y],
    [null, /\s+/y],
  ];

  // The text as tokens {cls, start, end}; cls is null for plain text.
  const tokenize = (text) => {
    const tokens = [];
    let at = 0;
    while (at < text.length) {
      let token = null;
      for (const [cls, pattern] of RULES) {
        pattern.lastIndex = at;
        const match = pattern.exec(text);
        if (!match || match[0].length === 0) continue;
        let end = at + match[0].length;
        let kind = cls;
        if (cls === "word") {
          let word = match[0];
          // project-away is one keyword; a-b is a minus between two names.
          if (word.includes("-") && !KEYWORDS.has(word)) {
            word = word.slice(0, word.indexOf("-"));
            end = at + word.length;
          }
          kind = KEYWORDS.has(word) ? "k-keyword"
            : WORD_OPS.has(word) ? "k-op"
            : LITERALS.has(word) ? "k-number"
            : null;
        }
        token = { cls: kind, start: at, end };
        break;
      }
      if (!token) token = { cls: null, start: at, end: at + 1 };
      tokens.push(token);
      at = token.end;
    }
    return tokens;
  };

  // The UTF-16 offset of a 1-based line and column (the server counts columns in characters).
  const offsetOf = (text, line, column) => {
    let at = 0;
    for (let l = 1; l < line; l++) {
      const next = text.indexOf("\n", at);
      if (next < 0) return text.length;
      at = next + 1;
    }
    for (let c = 1; c < column && at < text.length && text[at] !== "\n"; c++) {
      at += text.codePointAt(at) > 0xffff ? 2 : 1;
    }
    return at;
  };

  const errorLine = Number(textarea.dataset.errorLine);
  const errorColumn = Number(textarea.dataset.errorColumn);
  let errorAt = errorLine > 0 && errorColumn > 0 ? offsetOf(textarea.value, errorLine, errorColumn) : -1;

  const highlight = (text) => {
    const out = document.createDocumentFragment();
    let marked = false;
    for (const token of tokenize(text)) {
      const piece = text.slice(token.start, token.end);
      const isError = errorAt >= token.start && errorAt < token.end;
      marked ||= isError;
      const classes = [token.cls, isError ? "k-error" : null].filter(Boolean);
      if (classes.length === 0) {
        out.append(piece);
      } else {
        const span = document.createElement("span");
        span.className = classes.join(" ");
        span.textContent = piece;
        out.append(span);
      }
    }
    if (errorAt >= 0 && !marked) {
      const span = document.createElement("span");
      span.className = "k-error";
      span.textContent = " ";
      out.append(span);
    }
    // A pre drops a last empty line that a textarea shows.
    if (text.endsWith("\n") || text === "") out.append("\n ");
    return out;
  };

  const pre = document.createElement("pre");
  pre.setAttribute("aria-hidden", "true");
  editor.insertBefore(pre, textarea);
  editor.classList.add("highlighted");

  const sync = () => {
    // Lines wrap alike only if both are as wide: leave room for the textarea's scrollbar.
    pre.style.right = `${textarea.offsetWidth - textarea.clientWidth}px`;
    pre.scrollTop = textarea.scrollTop;
  };
  const grow = () => {
    textarea.style.height = "auto";
    const most = Math.max(window.innerHeight * 0.6, 200);
    textarea.style.height = `${Math.min(textarea.scrollHeight + 2, most)}px`;
  };
  const paint = () => {
    pre.replaceChildren(highlight(textarea.value));
    sync();
  };
  textarea.addEventListener("input", () => {
    errorAt = -1; // the text changed: the reported place no longer holds
    grow();
    paint();
  });
  textarea.addEventListener("scroll", sync);
  window.addEventListener("resize", () => { grow(); sync(); });
  grow();
  paint();
  if (errorAt >= 0) {
    textarea.focus({ preventScroll: true });
    textarea.setSelectionRange(errorAt, errorAt);
  }

  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      textarea.form.requestSubmit(document.getElementById("run"));
    }
  });

  for (const name of document.querySelectorAll("code.insertable[data-insert]")) {
    name.setAttribute("role", "button");
    name.tabIndex = 0;
    name.title = "Insert at the cursor";
    const insert = (event) => {
      event.preventDefault(); // in a summary, inserting does not fold the table
      textarea.focus();
      textarea.setRangeText(name.dataset.insert, textarea.selectionStart, textarea.selectionEnd, "end");
      textarea.dispatchEvent(new Event("input"));
    };
    name.addEventListener("click", insert);
    name.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") insert(event);
    });
  }

  const filter = document.getElementById("schema-filter");
  if (filter) {
    filter.closest(".schema-filter").hidden = false;
    filter.addEventListener("input", () => {
      const needle = filter.value.trim().toLowerCase();
      const has = (element) => element.dataset.insert.toLowerCase().includes(needle);
      for (const table of document.querySelectorAll(".schema-table")) {
        const tableHit = has(table.querySelector("summary [data-insert]"));
        let columnHits = 0;
        for (const item of table.querySelectorAll(".schema-columns li")) {
          const hit = needle === "" || tableHit || has(item.querySelector("[data-insert]"));
          item.hidden = !hit;
          if (hit && needle !== "" && !tableHit) columnHits++;
        }
        table.hidden = needle !== "" && !tableHit && columnHits === 0;
        table.open = columnHits > 0;
      }
    });
  }

  for (const input of document.querySelectorAll("input[data-enter-clicks]")) {
    input.addEventListener("keydown", (event) => {
      const button = document.getElementById(input.dataset.enterClicks);
      if (event.key !== "Enter" || !button) return;
      event.preventDefault();
      button.form.requestSubmit(button);
    });
  }

  for (const form of document.querySelectorAll(".query-list form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});

// Devices and the action center: a command line of the device timeline cut to a few lines shows
// whole when clicked (its title holds it whole without script); a page with actions still open
// ([data-refresh] = seconds) reloads to show their progress, unless the viewer is typing in it or
// looking at another tab (without script it is reloaded by hand).
document.addEventListener("DOMContentLoaded", () => {
  for (const code of document.querySelectorAll("code.clamp")) {
    code.addEventListener("click", () => code.classList.toggle("expanded"));
  }

  const marker = document.querySelector("[data-refresh]");
  const secs = marker ? Number(marker.dataset.refresh) : 0;
  if (!(secs > 0)) return;
  setInterval(() => {
    const active = document.activeElement;
    const typing = active instanceof HTMLInputElement || active instanceof HTMLSelectElement || active instanceof HTMLTextAreaElement;
    if (typing || document.visibilityState !== "visible") return;
    // The notice of the change that led here was read already.
    const url = new URL(window.location.href);
    url.searchParams.delete("notice");
    window.location.replace(url.toString());
  }, secs * 1000);
});

// Incidents and alerts: the bulk bar counts the ticked incidents and waits for one; hovering or
// focusing a node of the attack story lights its links; merging asks first. Without script the
// bulk change answers "select at least one", the story is a still picture, and merging is a form.
document.addEventListener("DOMContentLoaded", () => {
  const bulk = document.getElementById("bulk");
  if (bulk) {
    const count = bulk.querySelector("[data-selected-count]");
    const buttons = bulk.querySelectorAll(".bulk-bar button");
    const update = () => {
      const n = bulk.querySelectorAll("input[type=checkbox][name=id]:checked").length;
      if (count) count.textContent = n ? `(${n} selected)` : "";
      for (const button of buttons) button.disabled = n === 0;
    };
    bulk.addEventListener("change", update);
    update();
  }

  const story = document.getElementById("attack-story");
  if (story) {
    const light = (node) => {
      const id = node.dataset.node;
      story.classList.add("tracing");
      node.classList.add("lit");
      for (const edge of story.querySelectorAll(`[data-from="${id}"], [data-to="${id}"]`)) {
        edge.classList.add("lit");
        const other = edge.dataset.from === id ? edge.dataset.to : edge.dataset.from;
        story.querySelector(`[data-node="${other}"]`)?.classList.add("lit");
      }
    };
    const clear = () => {
      story.classList.remove("tracing");
      for (const lit of story.querySelectorAll(".lit")) lit.classList.remove("lit");
    };
    for (const node of story.querySelectorAll("[data-node]")) {
      node.addEventListener("mouseenter", () => light(node));
      node.addEventListener("mouseleave", clear);
      node.addEventListener("focusin", () => light(node));
      node.addEventListener("focusout", clear);
    }
  }

  const merge = document.getElementById("merge-form");
  if (merge) {
    merge.addEventListener("submit", (event) => {
      if (!window.confirm(merge.dataset.confirm)) event.preventDefault();
    });
  }
});
