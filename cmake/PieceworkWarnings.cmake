# Our own targets build with every warning as an error; generated protobuf code does not
# go through this function, so it stays exempt.
function(pw_strict target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align)
endfunction()

# A stage is a library (all logic, testable without sockets) plus a thin main.cpp.
function(pw_stage_executable name lib)
  add_executable(${name} main.cpp)
  target_link_libraries(${name} PRIVATE ${lib})
  pw_strict(${name})
endfunction()
