// A virtualised list of fixed-height rows: only the rows in view (plus a margin) are in the DOM,
// so a run view with thousands of events scrolls and updates without jank. Sticks to the bottom
// while the user has not scrolled up (a live tail).
import { useEffect, useLayoutEffect, useRef, useState, type ReactNode } from "react";

export function VirtualList<T>(props: {
  items: readonly T[];
  rowHeight: number;
  height: number;
  /** Bumped when items changed in place (the array is appended to). */
  version: number;
  itemKey: (item: T, index: number) => string;
  render: (item: T, index: number) => ReactNode;
  label: string;
  follow?: boolean;
}) {
  const { items, rowHeight, height } = props;
  const ref = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const stick = useRef(true);
  const total = items.length * rowHeight;
  useLayoutEffect(() => {
    const el = ref.current;
    if (el && (props.follow ?? true) && stick.current) {
      el.scrollTop = total;
      setTop(el.scrollTop);
    }
  }, [props.version, total, props.follow]);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const onScroll = () => {
      setTop(el.scrollTop);
      stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - rowHeight * 2;
    };
    el.addEventListener("scroll", onScroll, { passive: true });
    return () => el.removeEventListener("scroll", onScroll);
  }, [rowHeight]);
  const first = Math.max(0, Math.floor(top / rowHeight) - 20);
  const last = Math.min(items.length, Math.ceil((top + height) / rowHeight) + 20);
  const rows: ReactNode[] = [];
  for (let i = first; i < last; i++) {
    rows.push(
      <div key={props.itemKey(items[i]!, i)} role="listitem" className="vrow" style={{ top: i * rowHeight, height: rowHeight }}>
        {props.render(items[i]!, i)}
      </div>,
    );
  }
  return (
    <div ref={ref} className="vlist" style={{ height }} role="list" aria-label={props.label} tabIndex={0} data-count={items.length}>
      <div style={{ height: total, position: "relative" }}>{rows}</div>
    </div>
  );
}
