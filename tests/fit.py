"""Does a page fit its viewport? A check for the browser tests, run in the page by Playwright.

`cut_off(page)` lists what a person cannot see or reach without a sideways scroll: the page
wider than the viewport, an element whose right edge lies beyond the viewport or its card,
content wider
than a box that scrolls or clips it (a table in its `.table-wrap`, a menu strip), a menu link
out of view, and meters of one list drawn at different widths. An empty list: the page fits.
It looks at every element, so a column, button or form added later is checked too.
"""

from __future__ import annotations

# Boxes that scroll sideways by design, with why. Nothing else may hide content that way.
SCROLLS_BY_DESIGN = (
    # A 30-day chart keeps readable bars on a phone and starts at its latest days (app.js).
    ".chart .plot",
)

CUT_OFF = """(allowed) => {
  const width = document.documentElement.clientWidth, found = [];
  const name = (el) => {
    const cls = typeof el.className === 'string'
      ? el.className.trim().split(/\\s+/).filter(Boolean).map((n) => '.' + n).join('') : '';
    const text = (el.textContent || el.value || '').trim().replace(/\\s+/g, ' ').slice(0, 40);
    return `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}${cls}`
      + (text ? ` "${text}"` : '');
  };
  // Visually hidden on purpose (screen-reader text, a stacked table's header row).
  const hidden = (el) => {
    for (let p = el; p && p !== document.body; p = p.parentElement) {
      const s = getComputedStyle(p);
      if (s.clipPath.startsWith('inset(50%') || s.clip === 'rect(0px, 0px, 0px, 0px)') return true;
      if (s.visibility === 'hidden' || s.display === 'none') return true;
    }
    return false;
  };
  const scrollsByDesign = (box) => allowed.some((selector) => box.matches(selector));
  // An ellipsis that keeps the whole text in its title is a shortening, not a cut.
  const ellipsis = (box) => getComputedStyle(box).textOverflow === 'ellipsis' && box.title;
  if (document.documentElement.scrollWidth > width) {
    found.push(`the page is ${document.documentElement.scrollWidth}px wide in ${width}px`);
  }
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if ((box.width === 0 && box.height === 0) || hidden(el)) continue;
    if (el.parentElement.closest(allowed.join(', '))) continue;  // inside a box that scrolls
    if (box.right > width + 0.5 || box.left < -0.5) {
      found.push(`${name(el)} spans ${Math.round(box.left)}–${Math.round(box.right)}px`
        + ` of a ${width}px viewport`);
      continue;
    }
    const card = el.parentElement.closest('.card, .stat');
    if (card) {  // a card holds what it shows (its own overflow is visible: nothing would clip)
      const edge = card.getBoundingClientRect();
      if (box.right > edge.right + 0.5 || box.left < edge.left - 0.5) {
        found.push(`${name(el)} spills out of its card (${Math.round(box.left)}–`
          + `${Math.round(box.right)}px in ${Math.round(edge.left)}–${Math.round(edge.right)}px)`);
        continue;
      }
    }
    const style = getComputedStyle(el);
    if (style.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 1
        && !scrollsByDesign(el) && !ellipsis(el) && el.tagName !== 'TEXTAREA'
        && el.tagName !== 'INPUT' && el.tagName !== 'SELECT') {
      found.push(`${name(el)} shows ${el.clientWidth}px of ${el.scrollWidth}px`
        + ` (overflow-x: ${style.overflowX})`);
    }
  }
  // Text that runs out of its box (white-space: nowrap in a narrow cell) is no element.
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const range = document.createRange();
    range.selectNodeContents(node);
    const box = range.getBoundingClientRect();
    const owner = node.parentElement;
    if (box.width === 0 || hidden(owner) || ellipsis(owner)) continue;
    if (owner.closest(allowed.join(', '))) continue;
    if (box.right > width + 0.5 || box.left < -0.5) {
      found.push(`text "${node.textContent.trim().slice(0, 40)}" of ${name(owner).split(' ')[0]}`
        + ` spans ${Math.round(box.left)}–${Math.round(box.right)}px of a ${width}px viewport`);
    }
  }
  // The main menu: every link in view, none scrolled away.
  for (const nav of document.querySelectorAll('nav[aria-label="Main"]')) {
    const edge = nav.getBoundingClientRect();
    for (const link of nav.querySelectorAll('a')) {
      const at = link.getBoundingClientRect();
      if (at.width === 0 || at.left < edge.left - 0.5 || at.right > edge.right + 0.5
          || at.right > width + 0.5) {
        found.push(`menu link "${link.textContent.trim()}" is out of view`);
      }
    }
  }
  // A meter's width says nothing: in one list every meter is drawn as wide as the others.
  const lists = new Map();
  for (const meter of document.querySelectorAll('meter')) {
    if (hidden(meter)) continue;
    const list = meter.closest('table, section, .card') || document.body;
    if (!lists.has(list)) lists.set(list, []);
    lists.get(list).push(meter);
  }
  for (const [list, meters] of lists) {
    const widths = meters.map((m) => Math.round(m.getBoundingClientRect().width));
    if (Math.max(...widths) - Math.min(...widths) > 1) {
      found.push(`meters of ${name(list).split(' ')[0]} are ${widths.join('/')}px wide`);
    }
  }
  return [...new Set(found)];
}"""


def cut_off(page) -> list[str]:
    """What the page's reader cannot see without scrolling sideways (empty when it fits)."""
    return page.evaluate(CUT_OFF, list(SCROLLS_BY_DESIGN))
