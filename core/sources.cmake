# The pure codec sources, listed once for pw_core and for the clang fuzz build.
set(PW_CORE_SOURCE_NAMES bencode.cpp sha1.cpp metainfo.cpp geometry.cpp wire.cpp tracker_codec.cpp torrent_builder.cpp byte_count.cpp rpc.cpp mse.cpp magnet.cpp krpc.cpp extension.cpp lsd.cpp)
list(TRANSFORM PW_CORE_SOURCE_NAMES PREPEND ${CMAKE_CURRENT_LIST_DIR}/ OUTPUT_VARIABLE PW_CORE_SOURCES)
