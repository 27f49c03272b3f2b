"""Every input edgesentry takes: ``hsi`` (hyperspectral cubes), ``image`` (files, arrays, colour
order, torch-exact resize), ``video`` (clips, frame decoding, resize-and-crop). Families and
``stream`` read through these modules and never redefine them."""
