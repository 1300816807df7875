# Our own targets build with every warning on; generated protobuf code does not go through
# this function, so it stays exempt. Warnings are errors only where we ask for it
# (scripts/build, CI): a user's or a packager's plain `cmake` must build with whatever a
# newer or older compiler finds to say.
option(PW_WERROR "Treat warnings in our own code as errors (scripts/build and CI turn it on)" OFF)
function(pw_strict target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align)
  if(PW_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# A stage is a library (all logic, testable without sockets) plus a thin main.cpp.
function(pw_stage_executable name lib)
  add_executable(${name} main.cpp)
  target_link_libraries(${name} PRIVATE ${lib})
  pw_strict(${name})
endfunction()
