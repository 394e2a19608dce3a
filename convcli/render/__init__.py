"""Feature maps to pictures: value mapping and colormaps (``mapping``), montages, statistics."""

#: The output options by name, as the CLI's flags, a pipeline file's ``output`` section and
#: ``convcli.write_image`` take them (``channels_first`` shapes a ``.npy`` output).
OUTPUT_OPTIONS = (
    "map_mode",
    "scale",
    "offset",
    "joint",
    "depth",
    "colormap",
    "split",
    "montage",
    "montage_grid",
    "legend",
    "rgba",
    "channels_first",
)
