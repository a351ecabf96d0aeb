"""The text that describes an item to the sentence encoder (SPEC §2).

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
"""

UNTITLED_ITEM = 'Untitled Item'

# (metadata key, label) in the order the lines appear.
TEXT_FIELDS = (('title', 'Title'), ('price', 'Price'), ('brand', 'Brand'), ('categories', 'Categories'))


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


def item_fields(meta):
    """[(label, text)] for the attributes the item has, in template order."""
    if not meta:
        return []
    fields = []
    for key, label in TEXT_FIELDS:
        text = attribute_text(key, meta.get(key))
        if text is not None:
            fields.append((label, text))
    return fields


def item_text(meta):
    """The SPEC §2 text for one item's metadata dict (None or {} for an item without metadata)."""
    fields = item_fields(meta)
    if not fields:
        return UNTITLED_ITEM
    return '\n'.join(f'{label}: {text}' for label, text in fields)
