"""Writes a text file into a C++ header as a string constant (build step)."""
import sys

src, dst, name = sys.argv[1:4]
text = open(src, encoding="utf-8").read()
with open(dst, "w", encoding="utf-8") as f:
    f.write("// Generated from %s by format/embed_text.py. Do not edit.\n" % src)
    f.write("#pragma once\n#include <string_view>\n")
    f.write("inline constexpr std::string_view %s = R\"pvmschema(%s)pvmschema\";\n"
            % (name, text))
