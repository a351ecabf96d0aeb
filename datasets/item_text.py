"""The text that describes an item to the sentence encoder (docs/data.md, Text features).

    Title: <title>
    Price: <price>
    Brand: <brand>
    Categories: <cat1, cat2, ...>

Each line appears only where the item has that attribute; an item with none of them is
"Untitled Item". Values are used as they are in McAuley's metadata (no HTML unescaping: titles
keep entities such as `&amp;`), converted to text and stripped of surrounding whitespace.

Differences from the released code, on purpose and harmless for the encodings:
- lines are joined with "\n", so the text never ends with a newline (the released code leaves a
  trailing "\n" when an item has no categories; tokenizers drop that whitespace anyway);
- an attribute counts as absent when it is None, an empty list or an empty string (the released
  code would write "Title: " for an empty title, or crash on an empty category list).

`fields` (train.py and the feature builder's `--text_fields`) keeps only some of the lines: 'all'
is the text above, 'title' gives "Title: <title>", and an item with none of the chosen fields is
"Untitled Item".
"""

UNTITLED_ITEM = 'Untitled Item'

# (metadata key, label) in the order the lines appear.
TEXT_FIELDS = (('title', 'Title'), ('price', 'Price'), ('brand', 'Brand'), ('categories', 'Categories'))
TEXT_FIELD_KEYS = tuple(key for key, _ in TEXT_FIELDS)
ALL_FIELDS = 'all'


def parse_text_fields(text):
    """'all', or the chosen fields in template order ('brand,title' -> 'title,brand'), else ValueError.

    The canonical form names the cache file and the sidecar, so equal choices must spell the same."""
    names = [part.strip().lower() for part in str(text).split(',') if part.strip()]
    if names == [ALL_FIELDS]:
        return ALL_FIELDS
    unknown = [name for name in names if name not in TEXT_FIELD_KEYS]
    if not names or unknown:
        raise ValueError(f"--text_fields must be 'all' or a comma list of {', '.join(TEXT_FIELD_KEYS)}; "
                         f'got {text!r}')
    chosen = [key for key in TEXT_FIELD_KEYS if key in names]
    return ALL_FIELDS if len(chosen) == len(TEXT_FIELD_KEYS) else ','.join(chosen)


def chosen_fields(fields=ALL_FIELDS):
    """The (key, label) pairs of a --text_fields value, in template order."""
    fields = parse_text_fields(fields)
    return TEXT_FIELDS if fields == ALL_FIELDS else tuple(f for f in TEXT_FIELDS if f[0] in fields.split(','))


def attribute_text(key, value):
    """The text of one attribute, or None when the item does not really have it."""
    if value is None:
        return None
    if key == 'categories':
        if not isinstance(value, (list, tuple)) or not value:
            return None
        first_path = value[0]  # McAuley lists several category paths; the first is the main one
        if isinstance(first_path, (list, tuple)):
            value = ', '.join(str(c) for c in first_path)
        else:  # a flat list of category names
            value = ', '.join(str(c) for c in value)
    elif isinstance(value, (list, tuple)):
        value = ', '.join(str(v) for v in value)
    text = str(value).strip()  # str(12.99) == '12.99', like the released code
    return text or None


def item_fields(meta, fields=ALL_FIELDS):
    """[(label, text)] for the chosen attributes the item has, in template order."""
    if not meta:
        return []
    found = []
    for key, label in chosen_fields(fields):
        text = attribute_text(key, meta.get(key))
        if text is not None:
            found.append((label, text))
    return found


def item_text(meta, fields=ALL_FIELDS):
    """The text (docs/data.md, Text features) for one item's metadata dict (None or {} for an item without metadata),
    from the chosen `fields` only ('all', or e.g. 'title,brand')."""
    found = item_fields(meta, fields)
    if not found:
        return UNTITLED_ITEM
    return '\n'.join(f'{label}: {text}' for label, text in found)
